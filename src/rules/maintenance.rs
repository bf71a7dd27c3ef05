//! The passes over many tasks: sweeping expired ones, reaping orphans,
//! renewing this instance's leases. Each works in batches the backend may
//! apply in one go, and one task's failure never stops a pass: it is
//! reported beside what the pass did.

use time::OffsetDateTime;

use crate::backend::{
    Backend, Change, Modified, Position, Record, Scan, Scope, Swap, join_skipped,
};
use crate::error::{Error, Result};
use crate::events::TaskEventKind;
use crate::id::TaskId;
use crate::lease;
use crate::rules::{Reading, Store};
use crate::sink::Notifier;
use crate::store::{Claimed, Missed, Reaped, Renewed, Swept, TaskStore, Transition};
use crate::task::{Outcome, Task};

/// What a sweep returns, given `steps`, the outcomes of its pass's steps
/// in order: `swept`, their failures in [`Swept::errors`], if it did
/// anything to report (deleted or cleaned, or missed a task or skipped an
/// entry); otherwise the first failure, if any, as the sweep's. A failure
/// beside a deletion never hides its count: a counter check that failed
/// after the batches deleted lost it
/// (`pg::a_sweep_whose_counter_check_fails_reports_what_it_deleted`).
fn swept_or_failed(mut swept: Swept, steps: [Result<()>; 3]) -> Result<Swept> {
    swept.errors = steps.into_iter().filter_map(Result::err).collect();
    if !swept.did_anything() && !swept.errors.is_empty() {
        return Err(swept.errors.swap_remove(0));
    }
    Ok(swept)
}

/// How many expired tasks a sweep deletes per batch.
const SWEEP_BATCH: usize = 1_024;

/// How many of the tasks a sweep deletes it keeps, without payloads (some
/// 400 bytes each), to tell its sink once its pass is through and no lock
/// of the pass is held: past it, the ones kept and every one after are told
/// as they are deleted (under the pass's locks, as every one was before),
/// so that a sweep of any backlog keeps bounded memory.
const TOLD_AFTER_THE_PASS: usize = 10_000;

/// The tasks a sweep deleted, and their `task.expired` events: held back
/// until the pass is through, up to [`TOLD_AFTER_THE_PASS`] of them.
struct Deleted<'a> {
    notifier: &'a Notifier,
    kept: Vec<Task>,
    count: usize,
}

impl<'a> Deleted<'a> {
    fn new(notifier: &'a Notifier) -> Deleted<'a> {
        Deleted {
            notifier,
            kept: Vec::new(),
            count: 0,
        }
    }

    /// Counts `task` deleted, and keeps it to tell, or tells it (and those
    /// kept, first) once too many are kept.
    fn push(&mut self, task: Task) {
        self.count += 1;
        if self.count <= TOLD_AFTER_THE_PASS {
            self.kept.push(task.without_payloads());
            return;
        }
        self.tell_kept();
        self.notifier.task(TaskEventKind::Expired, &task);
    }

    /// Tells the sink of the tasks kept, in the order they were deleted.
    fn tell_kept(&mut self) {
        for task in self.kept.drain(..) {
            self.notifier.task(TaskEventKind::Expired, &task);
        }
    }
}

impl<B: Backend> Store<B> {
    /// Deletes every task expired at `now`, batch by batch, with one
    /// durable barrier for the whole pass: until it, a power loss can bring
    /// back tasks reported deleted, still expired (so seen by no reader),
    /// for the next sweep to delete again. The barrier is raised even when
    /// a batch fails.
    ///
    /// The sink is told of the deleted tasks once the barrier is raised:
    /// until then the backend may hold a lock for the pass (the file
    /// store's batches lock, shared, while the `expiring/` entries of
    /// finished tasks wait for their removals to be durable), and a sink is
    /// told with no lock held. The tasks are kept without their payloads
    /// meanwhile, as the backend keeps the index entries it removes, up to
    /// [`TOLD_AFTER_THE_PASS`] of them; a larger pass tells the rest as it
    /// goes.
    pub(super) fn sweep_at(&self, now: OffsetDateTime) -> Result<Swept> {
        let mut swept = Swept::default();
        let mut deleted = Deleted::new(&self.settings.notifier);
        // First the tasks the backend can remove as it meets them (before
        // the clean-up, which may read every new task into a snapshot):
        // running ones it has not read yet, finished ones its index says
        // are due.
        {
            let mut report = |task: Task| deleted.push(task);
            self.backend
                .remove_unread(&|task| task.is_expired_at(now), &mut report);
            self.backend.remove_due(now, &mut report);
        }
        // A clean-up that fails keeps no expired task from going.
        let cleaned = self.backend.clean_up(&mut swept.cleaned);
        let swept_all = self.sweep_batches(now, &mut swept, &mut deleted);
        let settled = self.backend.settle_expired();
        swept.deleted = deleted.count;
        deleted.tell_kept();
        swept_or_failed(swept, [cleaned, swept_all, settled])
    }

    /// The batches of [`sweep_at`](Self::sweep_at): the tasks they deleted
    /// go into `deleted`, what they missed and skipped into `swept`.
    fn sweep_batches(
        &self,
        now: OffsetDateTime,
        swept: &mut Swept,
        deleted: &mut Deleted<'_>,
    ) -> Result<()> {
        let mut scan = Scan::new(Scope::All, SWEEP_BATCH);
        scan.expired_at = Some(now);
        // A batch's tasks are removed and reported by id, version and
        // status: their payloads (results of up to the payload cap each)
        // need not be held.
        scan.payloads = false;
        scan.removes = true;
        loop {
            let batch = self.backend.scan(&scan)?;
            let exhausted = batch.tasks.len() < scan.limit;
            swept.cleaned += batch.cleaned;
            self.notify_skipped(join_skipped(&mut swept.skipped, batch.skipped));
            let Some(last) = batch.tasks.last() else {
                return Ok(());
            };
            scan.after = Some(Position::of(last));
            // What the scan asked for alone, whatever the backend returned:
            // a backend that filters less than it should (one written
            // outside the crate) never has a live task deleted.
            let expired: Vec<Task> = batch
                .tasks
                .into_iter()
                .filter(|t| scan.matches(t))
                .collect();
            let results = self.backend.remove_expired(&expired);
            for (task, result) in expired.into_iter().zip(results) {
                match result {
                    Ok(Swap::Done) => deleted.push(task),
                    // Changed since it was read: deleted by someone else, or
                    // recreated under its id (then it is not this one).
                    Ok(_) => {}
                    Err(error) => swept.missed.push(missed("sweep", task.id, error)),
                }
            }
            if exhausted {
                return Ok(());
            }
        }
    }

    /// Deletes the active tasks expired at `now`: they hold a place under
    /// the active-task cap until they are deleted.
    pub(super) fn free_expired_active(&self, now: OffsetDateTime) -> Result<()> {
        let mut scan = Scan::new(Scope::Active, usize::MAX);
        scan.expired_at = Some(now);
        scan.payloads = false;
        scan.removes = true;
        let batch = self.backend.scan(&scan)?;
        self.notify_skipped(&batch.skipped);
        self.forget_expired(batch.tasks);
        Ok(())
    }

    /// Fails every running task whose lease lapsed by `at` (its clock's
    /// reading: [`Reading`]).
    pub(super) fn reap_at(&self, at: Reading) -> Result<Reaped> {
        let Reading { now, clock, .. } = at;
        let batch = self.backend.scan(&lapsed(clock))?;
        self.notify_skipped(&batch.skipped);
        let mut reaped = Reaped {
            skipped: batch.skipped,
            ..Reaped::default()
        };
        let grace = self.settings.claim_grace();
        let mut pairs = Vec::new();
        let mut expired = Vec::new();
        for task in batch.tasks {
            if task.is_expired_at(now) {
                expired.push(task);
                continue;
            }
            if !lease::is_reapable(&task, clock, grace) {
                continue;
            }
            match self.orphan_failed(&task, now) {
                Ok(next) => pairs.push((task, next)),
                Err(error) => reaped.missed.push(missed("reap", task.id, error)),
            }
        }
        reaped.expired = self.forget_expired(expired);
        let results = self.replace_all(&pairs);
        for ((current, next), result) in pairs.into_iter().zip(results) {
            let id = current.id.clone();
            let outcome = match result {
                Ok(Swap::Done) => {
                    let task = next.into_task();
                    self.report_reaped(&task);
                    Ok(Some(task))
                }
                // It changed since it was judged an orphan: judge it again,
                // under the backend's atomic read-decide-write.
                Ok(_) => self.reap_one(&id),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Some(task)) => reaped.tasks.push(task),
                Ok(None) => {}
                Err(error) => reaped.missed.push(missed("reap", id, error)),
            }
        }
        reaped.tasks.sort_by(Task::listing_order);
        Ok(reaped)
    }

    /// Reaps task `id` if it is (still) an orphan, and reports it: one
    /// task of a pass, or [`TaskStore::reap_task`].
    pub(super) fn reap_one(&self, id: &TaskId) -> Result<Option<Task>> {
        let grace = self.settings.claim_grace();
        let modified = self.modify(id, &mut |current| {
            let Reading { now, clock, .. } = self.read_clock();
            if current.is_expired_at(now) || !lease::is_reapable(current, clock, grace) {
                return Ok(Change::Keep);
            }
            Ok(Change::Replace(self.orphan_failed(current, now)?))
        })?;
        let Modified::Replaced(task) = modified else {
            return Ok(None);
        };
        self.report_reaped(&task);
        Ok(Some(task))
    }

    /// Logs a reaped orphan and sends its event.
    fn report_reaped(&self, task: &Task) {
        // Contained, as every line said once a pass's writes are made: a
        // host's subscriber that panicked here ended the reap, its result
        // and the `task.reaped` events of this task and every later one
        // lost, the tasks reaped all the same.
        crate::panics::contained(|| {
            tracing::info!(task = %task.id, owner = task.owner.as_deref().unwrap_or(""), "reaped an orphaned task");
        });
        self.settings.notifier.task(TaskEventKind::Reaped, task);
    }

    /// The failed version of an orphan: all it held, with the orphan error
    /// in place of its resume state and input requests. It fits the payload
    /// cap plus [`OWN_HEADROOM`](crate::OWN_HEADROOM): the error's fields
    /// are bounded (ids and instance ids by their caps) except a resumable
    /// task's kind, which moves from the resume state the failed task drops.
    fn orphan_failed(&self, current: &Task, now: OffsetDateTime) -> Result<Record> {
        let error = lease::orphan_error(current, &self.settings.lease.instance_id);
        let mut next = current.clone();
        Outcome::Failed(error).apply(&mut next, now)?;
        self.settings.lease.after_write(&mut next, now);
        self.settings.limits.record_own(next, current)
    }

    /// Claims every resumable orphan of one of `kinds` at `at` (its lease
    /// judged by the clock's reading: [`Reading`]). The lines it logs once
    /// the claims are written are contained ([`crate::panics::contained`]):
    /// a host's subscriber that panics at one costs that line, never the
    /// result, whose tasks are claimed for the caller to run.
    pub(super) fn claim_at(&self, at: Reading, kinds: &[&str]) -> Result<Claimed> {
        let Reading {
            now,
            clock,
            lease_from,
        } = at;
        let batch = self.backend.scan(&lapsed(clock))?;
        self.notify_skipped(&batch.skipped);
        let mut claimed = Claimed {
            skipped: batch.skipped,
            ..Claimed::default()
        };
        let mut pairs = Vec::new();
        let mut expired = Vec::new();
        for task in batch.tasks {
            if task.is_expired_at(now) {
                expired.push(task);
                continue;
            }
            if !lease::is_claimable(&task, clock, kinds) {
                continue;
            }
            let mut next = task.clone();
            let taken = self
                .settings
                .lease
                .take_over(&mut next, lease_from)
                .and_then(|()| self.settings.limits.record_own(next, &task));
            match taken {
                Ok(next) => pairs.push((task, next)),
                Err(error) => claimed.missed.push(missed("claim", task.id, error)),
            }
        }
        claimed.expired = self.forget_expired(expired);
        let (results, returned) = self.replace_leases(&pairs);
        for ((current, next), result) in pairs.into_iter().zip(results) {
            let outcome = match result {
                Ok(Swap::Done) if returned.lapsed(next.task()) => {
                    self.renewed_claim(next.into_task())
                }
                Ok(Swap::Done) => Ok(Some(next.into_task())),
                // Changed since it was judged claimable (renewed by its
                // owner, claimed by another instance first, or written by
                // another, a client's answer, and still an orphan): judge
                // it again, under the backend's atomic read-decide-write.
                Ok(_) => self.claim_one(&current.id, kinds),
                Err(error) => Err(self.claim_failed(next.into_task(), error)),
            };
            match outcome {
                Ok(Some(task)) => {
                    self.forget_disowned(&task.id);
                    // Contained, as every line said once the claims are
                    // written: a host's subscriber that panicked here would
                    // end the call, and the tasks claimed would reach no
                    // caller, claimed and run by no one until their lease
                    // lapsed.
                    crate::panics::contained(|| {
                        tracing::info!(task = %task.id, epoch = task.epoch, "claimed an orphaned task to resume it");
                    });
                    self.settings.notifier.task(TaskEventKind::Claimed, &task);
                    claimed.tasks.push(task);
                }
                Ok(None) => {}
                Err(error) => claimed.missed.push(missed("claim", current.id, error)),
            }
        }
        claimed.tasks.sort_by(Task::listing_order);
        Ok(claimed)
    }

    /// The claimed `task`, whose lease lapsed while its claim waited
    /// ([`Returned::lapsed`]), renewed; an error if the
    /// renewal failed, or found it no longer this claim's (another claimed
    /// or reaped it since). The claim then stands, lapsed, with no run of
    /// this handle's: it is left to the next claim
    /// ([`disown_claim`](Store::disown_claim)).
    fn renewed_claim(&self, task: Task) -> Result<Option<Task>> {
        match self.renew_lease(&task.id) {
            Ok(Transition::Applied(renewed)) if renewed.epoch == task.epoch => Ok(Some(renewed)),
            other => {
                let error = match other {
                    Err(e) => e,
                    Ok(now) => Error::NotOwner {
                        id: task.id.clone(),
                        owner: now.task().owner.clone(),
                    },
                };
                self.disown_claim(task);
                Err(error)
            }
        }
    }

    /// Claims task `id` if it is (still) a resumable orphan of one of
    /// `kinds`: one task of a pass, written since the pass judged it.
    fn claim_one(&self, id: &TaskId, kinds: &[&str]) -> Result<Option<Task>> {
        let mut tried = None;
        let modified = self.modify(id, &mut |current| {
            let Reading {
                now,
                clock,
                lease_from,
            } = self.read_clock();
            if current.is_expired_at(now) || !lease::is_claimable(current, clock, kinds) {
                return Ok(Change::Keep);
            }
            let mut next = current.clone();
            self.settings.lease.take_over(&mut next, lease_from)?;
            let next = self.settings.limits.record_own(next, current)?;
            tried = Some(next.task().clone());
            Ok(Change::Replace(next))
        });
        match modified {
            Ok(Modified::Replaced(task)) => Ok(Some(task)),
            Ok(_) => Ok(None),
            Err(error) => Err(match tried {
                Some(next) => self.claim_failed(next, error),
                None => error,
            }),
        }
    }

    /// `error`, of a claim whose write of `next` failed: unless the failure
    /// is known to have changed nothing, the claim may stand all the same,
    /// and is left to lapse ([`disown_claim`](Store::disown_claim)). (Known
    /// to have changed nothing, the task is not this claim's: the same
    /// claim by another pass of this handle may stand, and is that pass's
    /// to renew.)
    fn claim_failed(&self, next: Task, error: Error) -> Error {
        if !error.changed_nothing() {
            // Contained: said amid a claim pass's results.
            crate::panics::contained(|| {
                tracing::warn!(task = %next.id, error = %error, "a failed claim may have left the task this handle's; left to lapse");
            });
            self.disown_claim(next);
        }
        error
    }

    /// Renews every lease this instance holds on a running task: the tasks
    /// renewed, and the ones it could not renew in [`Renewed::missed`]
    /// (a task that cannot be renewed keeps no other from being renewed).
    pub(super) fn renew_all(&self) -> Result<Renewed> {
        // One reading for the pass: its leases all run from it.
        let at = self.reading();
        let now = at.now;
        // Failed creates first: what is still there of them is not renewed.
        self.settle_undone();
        let batch = self.backend.scan(&Scan::new(Scope::Active, usize::MAX))?;
        self.notify_skipped(&batch.skipped);
        let mut renewed = Renewed {
            skipped: batch.skipped,
            ..Renewed::default()
        };
        let lease = &self.settings.lease;
        let mut pairs = Vec::new();
        let mut expired = Vec::new();
        for task in batch.tasks {
            if task.is_expired_at(now) {
                expired.push(task);
                continue;
            }
            if !lease.owns(&task) || self.is_undone(&task) {
                continue;
            }
            match self.renewed(&task, at.lease_from) {
                Ok(record) => pairs.push((task, record)),
                Err(error) => renewed.missed.push(missed("renew", task.id, error)),
            }
        }
        renewed.expired = self.forget_expired(expired);
        let (results, returned) = self.replace_leases(&pairs);
        for ((current, next), result) in pairs.into_iter().zip(results) {
            let outcome = match result {
                Ok(Swap::Done) if returned.lapsed(next.task()) => self.renew_lease(&current.id),
                Ok(Swap::Done) => Ok(Transition::Applied(next.into_task())),
                // Written meanwhile (another instance's cancel request, say):
                // renew what is there now.
                Ok(_) => self.renew_lease(&current.id),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(Transition::Applied(task)) => renewed.tasks.push(task),
                // Finished, deleted, expired or taken over since it was read.
                Ok(_) | Err(Error::NotFound { .. } | Error::NotOwner { .. }) => {}
                Err(error) => renewed.missed.push(missed("renew", current.id, error)),
            }
        }
        renewed.tasks.sort_by(Task::listing_order);
        Ok(renewed)
    }

    /// Writes a batch of fresh leases (renewals or claims), and reads the
    /// time it returned, to tell a lease that lapsed while it waited: the
    /// time this handle's leases run from (`lease_from`), which goes on
    /// while the clock reads behind the handle's time, where that time
    /// stands still. Read only for a batch: a handle's time never goes
    /// back, so a reading no write needs is not taken.
    fn replace_leases(&self, pairs: &[(Task, Record)]) -> (Vec<Result<Swap>>, Returned) {
        let results = self.replace_all(pairs);
        let after = (!pairs.is_empty()).then(|| self.reading().lease_from);
        (results, Returned(after))
    }
}

impl<B: Backend> Store<B> {
    /// [`TaskStore::renew_leases_of`]: the tasks it can renew as read (live,
    /// running, this instance's) in one batch of conditional writes; every
    /// other, and every one written meanwhile, through
    /// [`renew_lease`](TaskStore::renew_lease), which says why.
    pub(super) fn renew_some(&self, ids: &[TaskId]) -> Vec<Result<Transition>> {
        // Failed creates first, as every renewal pass: their tasks are
        // no caller's to renew.
        self.settle_undone();
        // Read once a task is found, as `renew_lease` reads it: a handle's
        // time is kept (it never goes back), so one not needed is not read.
        let mut reading = None;
        let lease = &self.settings.lease;
        let mut results: Vec<Option<Result<Transition>>> = ids.iter().map(|_| None).collect();
        let (mut pairs, mut slots) = (Vec::new(), Vec::new());
        // An id given again is renewed again, after the batch, one by one:
        // a batch holds each task once (two writes computed from one read
        // would be one write).
        let mut batched = std::collections::HashSet::new();
        let mut again = Vec::new();
        let mut first = Vec::new();
        for (slot, id) in ids.iter().enumerate() {
            if batched.insert(id) {
                first.push(slot);
            } else {
                again.push(slot);
            }
        }
        // One load for the batch (one round trip on a backend that pays
        // one per call).
        let unique: Vec<TaskId> = first.iter().map(|&slot| ids[slot].clone()).collect();
        let loaded = self.backend.load_all(&unique);
        for (slot, loaded) in first.into_iter().zip(loaded) {
            let id = &ids[slot];
            let current = match loaded {
                Ok(Some(current)) => current,
                Ok(None) => {
                    results[slot] = Some(Err(Error::NotFound { id: id.clone() }));
                    continue;
                }
                Err(e) => {
                    results[slot] = Some(Err(e));
                    continue;
                }
            };
            let at = *reading.get_or_insert_with(|| self.reading());
            let now = at.now;
            if super::unwritable(&current, now, None, None).is_some()
                || !lease.owns(&current)
                || self.is_undone(&current)
            {
                // Its own write says what it is (terminal, expired,
                // another's, a failed create's).
                results[slot] = Some(self.renew_lease(id));
                continue;
            }
            match self.renewed(&current, at.lease_from) {
                Ok(record) => {
                    pairs.push((current, record));
                    slots.push(slot);
                }
                Err(e) => results[slot] = Some(Err(e)),
            }
        }
        let (swaps, returned) = self.replace_leases(&pairs);
        for ((slot, (_, record)), swap) in slots.into_iter().zip(pairs).zip(swaps) {
            results[slot] = Some(match swap {
                Ok(Swap::Done) if returned.lapsed(record.task()) => self.renew_lease(&ids[slot]),
                Ok(Swap::Done) => Ok(Transition::Applied(record.into_task())),
                // Written meanwhile: renew what is there now.
                Ok(_) => self.renew_lease(&ids[slot]),
                Err(e) => Err(e),
            });
        }
        for slot in again {
            results[slot] = Some(self.renew_lease(&ids[slot]));
        }
        results
            .into_iter()
            .map(|r| r.expect("every id has its result"))
            .collect()
    }
}

/// A task `pass` could not handle, said in the log too (with its id and
/// the error): a caller that keeps only what the pass did
/// (`reap_orphans`, `sweep_expired`, `renew_leases`) loses nothing unsaid.
/// Said contained: a host's subscriber that panics at the line costs the
/// line, never the pass's result (a claim's tasks among it).
fn missed(pass: &'static str, id: TaskId, error: Error) -> Missed {
    crate::panics::contained(|| {
        tracing::warn!(task = %id, error = %error, pass, "a task the pass could not handle; the next pass tries again");
    });
    Missed { id, error }
}

/// When a batch of fresh leases ([`Store::replace_leases`]) returned, by
/// the time this handle's leases run from ([`Reading`]'s `lease_from`): no
/// time at all for a batch of none.
struct Returned(Option<OffsetDateTime>);

impl Returned {
    /// Whether `task`, a version the batch wrote with a fresh lease, holds
    /// one that had lapsed by the time the batch returned: its write waited
    /// longer than the lease (for a lock a process stopped while it held
    /// it, say). Such a lease is renewed again, under the backend's
    /// read-decide-write at the time of that write, rather than handed out
    /// lapsed, to be reaped or claimed by another at once.
    fn lapsed(&self, task: &Task) -> bool {
        self.0.is_some_and(|after| task.is_orphan_at(after))
    }
}

/// The running tasks whose lease has lapsed at `now`: every candidate of a
/// reap or a claim (each is judged again), and no other, so that a backend
/// can leave the others undecoded.
pub(super) fn lapsed(now: OffsetDateTime) -> Scan {
    let mut scan = Scan::new(Scope::Active, usize::MAX);
    scan.lapsed_at = Some(now);
    scan
}
