//! Removals: one task under its lock to the last fsync, a batch with one
//! fsync per directory (a sweep's taking every stripe at once), and the
//! removals of expired tasks, made durable once for a whole sweep. A
//! finished task's `expiring/` entry goes only once its file's removal is
//! durable, and `active/` is made durable before the first finished task
//! leaves `done/`.

use std::io;

use crate::backend::{Swap, is_current};
use crate::error::{Error, Result};
use crate::file::layout::{Area, expiring_name, stripe, task_name};
use crate::file::lock::{self, BatchHold};
use crate::file::stamp::{self, Stamp};
use crate::file::unread::Unnoticed;
use crate::file::watch::Change;
use crate::file::write::Touched;
use crate::file::{Durability, FileBackend, Found, parallel};
use crate::task::Task;

impl FileBackend {
    /// Notes the `expiring/` entry of the finished `task`, if it has one, for
    /// [`sync_touched`](Self::sync_touched) to remove once the task's own
    /// removal is durable. (The entry's name is its incarnation's alone, so
    /// it may go after the task's lock is released.)
    pub(in crate::file) fn remove_index(&self, task: &Task, touched: &mut Touched) {
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
    pub(in crate::file) fn sync_touched(&self, touched: &Touched) -> Result<()> {
        if touched.done {
            self.sync(Area::Done, touched.before(Area::Done))?;
        }
        if touched.active {
            self.sync(Area::Active, touched.before(Area::Active))?;
        }
        let mut unindexed = self.touched();
        let removed = parallel::map(&touched.unindex, |name| {
            self.remove_if_there(self.expiring.dir(), name)
                // The task is durably gone; its entry is stale, and the
                // next sweep removes it.
                .unwrap_or_else(|e| {
                    tracing::warn!(
                        error = %e,
                        "cannot remove the index entry of a removed task; the next sweep will"
                    );
                    false
                })
        })
        .contains(&true);
        unindexed.expiring = removed;
        self.sync_links(&unindexed)
    }

    /// Removes the task `found`, and any stale copy of it, and its index
    /// entry (after the file: an entry left behind is stale, harmless).
    /// The caller makes `touched` durable.
    pub(in crate::file) fn remove_found(&self, found: &Found, touched: &mut Touched) -> Result<()> {
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
    pub(super) fn proven_running(&self, current: &Task, drained: &mut bool) -> Result<bool> {
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
    /// other stripes' tasks go. The stripes are waited for in `pass`, the
    /// batch's (its removals wait in it too).
    fn settle_moves_of(
        &self,
        tasks: &[Task],
        wait: bool,
        pass: &lock::Pass,
    ) -> Result<(Touched, Untaken)> {
        let mut touched = self.touched();
        let mut untaken = Untaken::new();
        let terminal: std::collections::BTreeSet<usize> = tasks
            .iter()
            .filter(|task| task.is_terminal())
            .map(|task| stripe(&task.id))
            .collect();
        if !terminal.is_empty() {
            if wait {
                for stripe in terminal {
                    if let Err(e) = self.locks.lock_in(&self.fs, stripe, Some(pass)).map(drop) {
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
    pub(in crate::file) fn settle_moves_once(&self, touched: &mut Touched) -> Result<()> {
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
    /// covered reports it. It serves `remove` (one task: a delete, or the
    /// one expired task a read met) and `remove_all` (the expired tasks a
    /// read met, which the rules forget); a sweep's removals go through
    /// [`remove_expired_batch`](Self::remove_expired_batch) instead.
    ///
    /// One task is removed under its lock to the last fsync, as a `modify`
    /// does. Several are left to the sweep while a check of the store holds
    /// the batches lock (a reader never waits for one), and are removed as
    /// [`remove_unsettled`](Self::remove_unsettled) says: every stripe's
    /// lock taken at once for `large_pass` tasks or more, else one stripe
    /// at a time.
    pub(in crate::file) fn remove_batch(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        if let [task] = tasks {
            return vec![self.remove_single(task)];
        }
        let _hold = match self.hold_removals(tasks, false) {
            Ok(hold) => hold,
            Err(failed) => return failed,
        };
        let (results, touched) = self.remove_unsettled(tasks, &lock::Pass::default());
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
    pub(in crate::file) fn remove_expired_batch(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        let hold = match self.hold_removals(tasks, true) {
            Ok(hold) => hold,
            Err(failed) => return failed,
        };
        // In the sweep's pass (`StripeLocks::sweep`), when a sweep removes.
        let sweep = self.locks.sweep();
        let own = lock::Pass::default();
        let (results, touched) = self.remove_unsettled(tasks, sweep.as_deref().unwrap_or(&own));
        self.defer_removals(touched, hold.as_ref());
        results
    }

    /// Leaves what removals of expired tasks touched to be made durable by
    /// [`settle_expired_removals`](Self::settle_expired_removals). Index
    /// entries left to remove keep the batches lock held until then
    /// (`hold`, the caller's, which holds it while it removes them).
    pub(in crate::file) fn defer_removals(&self, touched: Touched, hold: Option<&BatchHold>) {
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
    pub(in crate::file) fn settle_expired_removals(&self) -> Result<()> {
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

    /// Removes each of `tasks` that is still the version given (the work
    /// of [`remove_batch`](Self::remove_batch) and
    /// [`remove_expired_batch`](Self::remove_expired_batch) but for making
    /// the removals durable): the results, and what the removals changed.
    ///
    /// A batch of `large_pass` tasks or more (a sweep's, in practice) takes
    /// every stripe's lock once, in stripe order, and removes the tasks in
    /// the order given (a sweep gives them in listing order, about the
    /// order their files were made, in which ext4 frees them faster than
    /// in any other), spread over the cores; writers wait for the batch. A
    /// smaller one, or one whose stripes cannot all be taken, goes one
    /// stripe at a time ([`remove_by_stripe`](Self::remove_by_stripe)).
    fn remove_unsettled(&self, tasks: &[Task], pass: &lock::Pass) -> (Vec<Result<Swap>>, Touched) {
        // One pass for the batch (`pass`: its own, or its sweep's): its
        // tries of every stripe, its wait for the moves to be over and its
        // removals wait its `stripe_wait` once in all.
        let all = if tasks.len() >= self.large_pass {
            self.locks.lock_all(&self.fs, Some(pass)).ok()
        } else {
            None
        };
        let (settled, untaken) = match self.settle_moves_of(tasks, all.is_none(), pass) {
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
            None => self.remove_by_stripe(tasks, settled, &untaken, pass),
        };
        (results, touched)
    }

    /// [`remove_batch`](Self::remove_batch) one stripe at a time: the batch
    /// in stripe order, each stripe's lock taken once for all of its tasks
    /// (a lock that failed, but by a wait that ran out, is tried again per
    /// task, in the pass too, so that each reports its own error). The
    /// tasks of a stripe in `untaken` are not tried: each reports the error
    /// its lock gave. The stripes are waited for in `pass`, the batch's,
    /// whose tries of every stripe (a large batch's) and waits for the
    /// moves to be over ([`settle_moves_of`](Self::settle_moves_of)) may
    /// have spent it.
    fn remove_by_stripe(
        &self,
        tasks: &[Task],
        settled: bool,
        untaken: &Untaken,
        pass: &lock::Pass,
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
        for group in order.chunk_by(|a, b| a.0 == b.0) {
            if let Some(e) = untaken.get(&group[0].0) {
                for &(_, at) in group {
                    results[at] = Some(Err(e.for_each_of("remove", &self.root)));
                }
                continue;
            }
            let guard = self.locks.lock_in(&self.fs, group[0].0, Some(pass));
            let mut drained = false;
            for &(stripe, at) in group {
                let result = match &guard {
                    Ok(_) => self.remove_locked(&tasks[at], &mut touched, &mut drained),
                    // Held by another for the whole wait: tried again, it
                    // would only wait again.
                    Err(e) if lock::ran_out(e) => Err(e.for_each_of("remove", &self.root)),
                    Err(_) => self
                        .locks
                        .lock_in(&self.fs, stripe, Some(pass))
                        .and_then(|_guard| {
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
}

/// The stripes whose locks a batch could not take, each with the error
/// taking it gave ([`FileBackend::settle_moves_of`]).
type Untaken = std::collections::BTreeMap<usize, Error>;

/// The removals of expired tasks a handle has made and not yet made
/// durable ([`settle_expired_removals`](FileBackend::settle_expired_removals)),
/// and, while they leave `expiring/` entries to remove, a hold on the
/// batches lock.
#[derive(Debug)]
pub(in crate::file) struct PendingRemovals {
    touched: Touched,
    hold: Option<BatchHold>,
}
