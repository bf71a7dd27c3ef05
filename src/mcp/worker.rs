//! The owner's side of the protocol: the background loop that renews
//! leases, watches the runs' tasks for what peers persisted, claims
//! resumable orphans, reaps and sweeps; and the steps of shutdown.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::background::Pass;
use super::calls::{StoreCall, Unfinished, blocking, get, lock, off_workers};
use super::protocol::{Book, cancel_requested, stored_responses};
use super::run::{
    Ending, Record, Run, RunState, RunWrite, Shared, ShutdownReport, Stop, panic_message,
    small_error,
};
use crate::error::Error;
use crate::id::TaskId;
use crate::store::Transition;
use crate::task::{Outcome, Task};

impl Shared {
    /// One watch tick: starts a renewal of every run whose lease is due,
    /// and a look (a read, then acting on what it finds) at every other
    /// running one, and returns: the store calls and what follows them run
    /// as tasks of their own, so that a call that hangs for one task (a
    /// write waiting on a row lock another session holds) holds up neither
    /// the ticks nor any other task's renewal. A run with a look under way
    /// gets no other; one with a renewal under way joins no other batch;
    /// either is renewed alone once that look or batch has been held up for
    /// a third of its lease (one task's write holds up the batch it is in),
    /// and in the batch before that (a look slower than a tick is no
    /// reason: renewed one by one, thousands outlast a lease).
    pub fn watch(self: &Arc<Self>) {
        let now = Instant::now();
        let renew_every = self.options.renew_interval;
        let (mut batch, mut alone, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        for run in lock(&self.local).values() {
            let every = renewal_period(renew_every, run.lease);
            let mut state = lock(&run.state);
            // Running operations, and runs recording their outcome (whose
            // write may be tried again for seconds: the task must not look
            // orphaned meanwhile), only renewed, never read. A run shutdown stopped
            // must not renew the lease its release gave up.
            let running = match state.ending {
                Ending::Running => true,
                Ending::Recording => false,
                Ending::Lost | Ending::Shutdown | Ending::Stopped => continue,
            };
            let due = every.filter(|every| now.duration_since(state.renewed_at) >= *every);
            match due.map(|every| renewal(&state, now, run.lease, every)) {
                Some(Renewal::Batched) => {
                    state.batched = Some(now);
                    batch.push(Arc::clone(run));
                }
                Some(Renewal::Alone) => {
                    state.renewing_alone = true;
                    alone.push(Arc::clone(run));
                }
                Some(Renewal::UnderWay) | None if running && state.looking.is_none() => {
                    state.looking = Some(now);
                    reads.push(Arc::clone(run));
                }
                Some(Renewal::UnderWay) | None => {}
            }
        }
        if !batch.is_empty() {
            tokio::spawn(Arc::clone(self).renew(batch, now, Renewal::Batched));
        }
        for run in alone {
            tokio::spawn(Arc::clone(self).renew(vec![run], now, Renewal::Alone));
        }
        if !reads.is_empty() {
            tokio::spawn(Arc::clone(self).read_runs(reads));
        }
    }

    /// Renews the leases of `runs` (as one batch: one fsync for them all
    /// on a file store; one by one, thousands of them outlast a lease),
    /// started at `at`, and acts on what it finds.
    async fn renew(self: Arc<Self>, runs: Vec<Arc<Run>>, at: Instant, how: Renewal) {
        let store = Arc::clone(&self.store);
        let ids: Vec<TaskId> = runs.iter().map(|run| run.id.clone()).collect();
        let renewed = off_workers(move || {
            let mut renewed = store.renew_leases_of(&ids).into_iter();
            ids.iter()
                .map(|id| {
                    // A store of a host's may answer for fewer.
                    renewed.next().unwrap_or_else(|| {
                        Err(Error::backend(
                            "task store",
                            format!("renew the lease of task {id}"),
                            "renew_leases_of gave no result for it",
                        ))
                    })
                })
                .collect::<Vec<_>>()
        })
        .await;
        for run in &runs {
            let mut state = lock(&run.state);
            match how {
                Renewal::Alone => state.renewing_alone = false,
                _ => state.batched = None,
            }
        }
        // A renewal that panicked renewed nothing; the next tick tries
        // again.
        let Ok(renewed) = renewed else { return };
        for (run, seen) in runs.into_iter().zip(renewed) {
            let seen = seen.map(|transition| Some(transition.into_task()));
            if seen.is_ok() {
                let mut state = lock(&run.state);
                state.renewed_at = state.renewed_at.max(at);
            }
            // A recording run's operation is over: nothing to act on; nor
            // for one a look is under way at: that look acts.
            let look = {
                let mut state = lock(&run.state);
                let look = state.ending == Ending::Running && state.looking.is_none();
                if look {
                    state.looking = Some(Instant::now());
                }
                look
            };
            self.seen(run, seen, look);
        }
    }

    /// Reads the tasks of `runs`, each with a look under way, and acts on
    /// what it finds.
    async fn read_runs(self: Arc<Self>, runs: Vec<Arc<Run>>) {
        let store = Arc::clone(&self.store);
        let ids: Vec<TaskId> = runs.iter().map(|run| run.id.clone()).collect();
        let seen = off_workers(move || store.get_all(&ids))
            .await
            .unwrap_or_else(|_| Vec::new());
        let mut seen: std::vec::IntoIter<crate::Result<Option<Task>>> = seen.into_iter();
        for run in runs {
            match seen.next() {
                Some(seen) => self.seen(run, seen, true),
                // A read that panicked: the next tick reads again.
                None => lock(&run.state).looking = None,
            }
        }
    }

    /// Acts on what a renewal or a read of `run`'s task found; with
    /// `look`, on a task of its own, which ends the run's look under way.
    fn seen(self: &Arc<Self>, run: Arc<Run>, seen: crate::Result<Option<Task>>, look: bool) {
        let looked = look.then(|| Looked(Arc::clone(&run)));
        match seen {
            Ok(Some(task)) => {
                if let Some(looked) = looked {
                    let this = Arc::clone(self);
                    tokio::spawn(async move {
                        this.observe(&looked.0, &task).await;
                    });
                }
            }
            Ok(None) | Err(Error::NotFound { .. }) => {
                // Expired (TTL) or deleted: nobody can see an outcome any
                // more, so stop the operation, as rmcp does at TTL.
                if let Some(abort) = &lock(&run.state).abort {
                    abort.abort();
                }
            }
            // Only another open owns it now: it claimed the task.
            Err(Error::NotOwner { .. }) => self.lose(&run, None),
            Err(e) => tracing::warn!(task = %run.id, error = %e, "task store watch failed"),
        }
    }

    /// Reads the task of `run` and acts on it, as a watch tick would
    /// (without renewing).
    pub async fn look(self: &Arc<Self>, run: &Arc<Run>) {
        let found = get(self.options.reads, &self.store, &run.id).await;
        self.looked(run, found.map_err(drop)).await;
    }

    /// Acts on what a look at `run`'s task `found`, as a watch tick would
    /// (a read that failed: the next tick reads again).
    pub(super) async fn looked(self: &Arc<Self>, run: &Arc<Run>, found: Result<Option<Task>, ()>) {
        match found {
            Ok(Some(task)) => self.observe(run, &task).await,
            // Gone: what a tick's read does then.
            Ok(None) => self.seen(Arc::clone(run), Ok(None), false),
            Err(()) => {}
        }
    }

    /// Acts on the stored state of a run's task: another epoch means the
    /// run is lost; a terminal task or a cancel request cancels the
    /// operation; peers' responses to outstanding requests are accepted.
    /// Its lines are contained: a host's subscriber that panics at one
    /// costs the line (a claim pass looks at each task it claimed in turn).
    pub async fn observe(self: &Arc<Self>, run: &Arc<Run>, task: &Task) {
        if run.ending() == Ending::Stopped {
            // Shutdown recorded it: nothing more of it is written.
            return;
        }
        if task.epoch != run.epoch {
            self.lose(run, Some(task));
            return;
        }
        if task.is_terminal() || cancel_requested(task) {
            // Ended elsewhere (reaped, finished through the store) or asked
            // to cancel: let the operation stop; its outcome, if any, loses.
            self.signal_cancel(run, !task.is_terminal()).await;
            return;
        }
        let responses = {
            let mut inputs = run.inputs.lock().await;
            if !inputs.waiters.is_empty() {
                inputs.deliver_recorded(&Book::of(task));
            }
            stored_responses(task, &inputs.book)
        };
        if !responses.is_empty()
            && let Err(e) = self.accept(run, responses).await
        {
            // Contained: a claim pass looks at its other tasks after.
            crate::panics::contained(|| {
                tracing::warn!(task = %run.id, error = %e.into_mcp(Some(&run.id)), "could not accept input responses");
            });
        }
    }

    /// Accepts `responses` for keys outstanding in `run`: records them
    /// (fenced) and, once that write applied, delivers them to the
    /// operation. Returns whether any was accepted; `Ok(false)` also when
    /// the run was lost or the task ended. An answer a peer stored for a
    /// key first (found when another write landed first) is taken before
    /// `responses`: the first answer to a key stands, wherever it came.
    pub async fn accept(
        &self,
        run: &Arc<Run>,
        responses: Vec<(String, Value)>,
    ) -> Result<bool, StoreCall> {
        let mut inputs = run.inputs.lock().await;
        let mut stored = Vec::new();
        loop {
            let mut next = inputs.book.clone();
            let mut accepted = next.accept(std::mem::take(&mut stored));
            accepted.extend(next.accept(responses.clone()));
            if accepted.is_empty() {
                return Ok(false);
            }
            match self.write_book(run, &mut inputs, next, &accepted).await? {
                RunWrite::Applied(_) => {
                    for (key, value) in accepted {
                        if let Some(waiter) = inputs.waiters.remove(&key) {
                            // The receiver is gone if the operation moved on.
                            let _ = waiter.send(value);
                        }
                    }
                    return Ok(true);
                }
                // A cancel landed first: the run stops (the next look at
                // the task tells it); the responses stay stored.
                RunWrite::Changed(now) if cancel_requested(&now) => return Ok(false),
                // Another write landed first: decide again from it, with
                // the answers peers stored in it first.
                RunWrite::Changed(now) => stored = stored_responses(&now, &inputs.book),
                RunWrite::Terminal | RunWrite::Lost(_) | RunWrite::Stopped => return Ok(false),
            }
        }
    }

    /// Tells a run's operation that cancellation was requested and wakes
    /// its pending input requests; with `withdraw`, also withdraws its
    /// outstanding requests in the store (the task is `working` again).
    pub async fn signal_cancel(&self, run: &Arc<Run>, withdraw: bool) {
        run.cancel.send_replace(true);
        let mut inputs = run.inputs.lock().await;
        inputs.waiters.clear();
        while withdraw && !inputs.book.outstanding.is_empty() {
            let mut next = inputs.book.clone();
            next.outstanding.clear();
            match self.write_book(run, &mut inputs, next, &[]).await {
                // Written, or not to be written by this run.
                Ok(
                    RunWrite::Applied(_)
                    | RunWrite::Terminal
                    | RunWrite::Lost(_)
                    | RunWrite::Stopped,
                )
                | Err(_) => return,
                // Decide again from what landed first.
                Ok(RunWrite::Changed(_)) => {}
            }
        }
    }

    /// Whether a claim pass may take `orphan`, which this manager resumes,
    /// that none has had the chance to: none began since its lease
    /// lapsed. (One that did and left it, its claim failing, leaves it to
    /// the next one the loop makes, not to one per poll.)
    pub fn may_claim(&self, orphan: &Task) -> bool {
        let began = *lock(&self.claimed_at);
        match (began, orphan.lease_expires_at) {
            (Some(began), Some(lapsed)) => began < lapsed,
            _ => true,
        }
    }

    /// Whether a claim pass of this manager is under way (it may be taking
    /// an orphan a poll read: see [`Shared::claiming`]).
    pub fn claim_under_way(&self) -> bool {
        self.claiming.load(Ordering::SeqCst) > 0
    }

    /// Whether this manager has a resume handler for `kind`.
    pub fn resumes(&self, kind: &str) -> bool {
        match self.handlers.read() {
            Ok(handlers) => handlers.contains_key(kind),
            Err(poisoned) => poisoned.get_ref().contains_key(kind),
        }
    }

    /// Claims the resumable orphans of the kinds this manager resumes, and
    /// resumes each.
    pub async fn claim(self: &Arc<Self>) {
        if self.is_closing() {
            return;
        }
        let kinds: Vec<String> = match self.handlers.read() {
            Ok(handlers) => handlers.keys().cloned().collect(),
            Err(poisoned) => poisoned.get_ref().keys().cloned().collect(),
        };
        if kinds.is_empty() {
            return;
        }
        // Under way before its time is set: a poll that finds a pass began
        // after its orphan's lease lapsed finds it under way, until every
        // task it claimed is started or handed back (the end of this call).
        self.claiming.fetch_add(1, Ordering::SeqCst);
        let _under_way = UnderWay(&self.claiming);
        *lock(&self.claimed_at) = Some(self.store.lease_now());
        let store = Arc::clone(&self.store);
        let claimed = blocking(move || {
            let kinds: Vec<&str> = kinds.iter().map(String::as_str).collect();
            store.claim(&kinds)
        })
        .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e.into_mcp(None), "claiming orphaned tasks failed");
                return;
            }
        };
        // Every run first, each renewed from now on: a look below may
        // write, and a run launched only after the looks before it could
        // see its claimed lease lapse behind them. A resume that panics
        // (the host store's `lease`, say) ends neither the pass nor the
        // other tasks' resumes: its task is handed back below. Nothing
        // between the claim and each task's start or hand-back can unwind:
        // the lines logged there are contained (a host's subscriber that
        // panics costs the line, never a claimed task its run).
        let (mut runs, mut unresumed) = (Vec::new(), Vec::new());
        for task in claimed.tasks {
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.resume(&task))) {
                Ok(Some(run)) => runs.push((run, task)),
                Ok(None) => {}
                Err(panic) => {
                    let why = panic_message(&*panic);
                    self.panicked(Pass::Claim, Some(&task.id), panic);
                    unresumed.push((task, why));
                }
            }
        }
        for (task, why) in unresumed {
            self.hand_back(&task, &why).await;
        }
        for missed in &claimed.missed {
            crate::panics::contained(|| {
                tracing::warn!(task = %missed.id, error = %missed.error, "could not claim an orphaned task");
            });
        }
        for (run, task) in runs {
            // A cancel request, or responses persisted while no one ran it.
            // A look says its lines contained: one whose line panics skips
            // no later task's look.
            self.observe(&run, &task).await;
        }
    }

    /// Launches the handler for a task this instance just claimed; its run.
    fn resume(self: &Arc<Self>, task: &Task) -> Option<Arc<Run>> {
        let kind = task.resume.as_ref().map(|r| r.kind.clone());
        let handler = kind.as_ref().and_then(|kind| match self.handlers.read() {
            Ok(handlers) => handlers.get(kind).cloned(),
            Err(poisoned) => poisoned.get_ref().get(kind).cloned(),
        });
        // Claimed only for kinds with a handler; none is ever removed.
        let handler = handler?;
        crate::panics::contained(|| {
            tracing::info!(task = %task.id, kind = kind.as_deref().unwrap_or(""), epoch = task.epoch, "resuming a claimed task");
        });
        let run = Run::of(task, self.store.lease(), self.store.lease_from());
        self.launch(Arc::clone(&run), move |ctx| handler(ctx));
        Some(run)
    }

    /// Hands back `task`, claimed by this instance, whose resume panicked
    /// (`why`) before its run was launched: released (its lease lapses at
    /// once) for the next claim pass, here or at another instance, if it
    /// has attempts left (the claim took one), or failed with
    /// `{"code": "resume_panicked", ..}` on its last. It is never left
    /// claimed by this live instance with no run: no one would renew its
    /// lease or run it, and it would read `working` until it lapsed. A
    /// write that fails leaves it to lapse, and be claimed or reaped then.
    async fn hand_back(&self, task: &Task, why: &str) {
        if self
            .run_of(&task.id)
            .is_some_and(|run| run.epoch == task.epoch)
        {
            // Launched before the panic: its supervisor records its end.
            return;
        }
        let record = if task.has_attempts_left() {
            Record::Release
        } else {
            Record::Finish(Outcome::Failed(resume_panicked_error(
                self.store.instance_id(),
                &task.id,
                why,
            )))
        };
        let releasing = matches!(record, Record::Release);
        let store = Arc::clone(&self.store);
        let (id, epoch) = (task.id.clone(), task.epoch);
        let written = blocking(move || record.write_at(&*store, &id, epoch)).await;
        // Said contained: the claim pass hands back its other tasks after.
        crate::panics::contained(|| match written {
            Ok(Transition::Applied(_)) if releasing => {}
            Ok(Transition::Applied(_)) => tracing::warn!(
                task = %task.id,
                "a claimed task whose resume panicked on its last attempt was failed"
            ),
            // Taken on, or ended, meanwhile: as it stands.
            Ok(_) => {}
            Err(e) => tracing::warn!(
                task = %task.id,
                error = %e.into_mcp(Some(&task.id)),
                "a claimed task whose resume panicked could not be handed back: it is claimed again, or reaped, once its lease lapses"
            ),
        });
    }

    /// Fails the orphans no one will resume.
    pub async fn reap(&self) {
        let store = Arc::clone(&self.store);
        match blocking(move || store.reap_orphans()).await {
            Ok(reaped) => {
                for task in reaped {
                    tracing::info!(task = %task.id, owner = ?task.owner, "reaped orphaned task");
                }
            }
            Err(e) => tracing::warn!(error = %e.into_mcp(None), "reaping orphans failed"),
        }
    }

    /// Deletes expired tasks, and logs what the sweep did, as the reap
    /// logs what it reaped: its counts if it did anything, and each failure
    /// of its pass beside them ([`Swept::errors`](crate::Swept::errors)),
    /// so that a sweep that deleted and then failed keeps its count. The
    /// store logs each task missed and each entry skipped.
    pub async fn sweep(&self) {
        let store = Arc::clone(&self.store);
        let swept = match blocking(move || store.sweep()).await {
            Ok(swept) => swept,
            Err(e) => {
                tracing::warn!(error = %e.into_mcp(None), "sweeping expired tasks failed");
                return;
            }
        };
        let (missed, skipped) = (swept.missed.len(), swept.skipped.len());
        if swept.did_anything() {
            tracing::info!(
                deleted = swept.deleted,
                cleaned = swept.cleaned,
                missed,
                skipped,
                "swept expired tasks"
            );
        }
        for error in &swept.errors {
            tracing::warn!(error = %error, "the sweep failed beside what it did; the next sweep tries again");
        }
    }

    /// Shuts down: no new task and no claim from now on; running operations
    /// get the grace period; then every run still running is stopped
    /// (aborted) and shutdown itself records its task released (resumable,
    /// with attempts left) or failed with `{"code": "shutdown"}`, whether
    /// or not its operation stops; then the background loop stops. Returns by the grace plus
    /// `shutdown_writes`, whatever the operations and the store do.
    pub async fn shutdown(self: &Arc<Self>) -> ShutdownReport {
        self.closing.store(true, Ordering::SeqCst);
        self.shutting_down.send_replace(true);
        let running = lock(&self.local).len();
        let _ = tokio::time::timeout(self.options.shutdown_grace, self.drain()).await;
        // From here the final writes, and the aborted operations' ends, get
        // one allowance together.
        let deadline = tokio::time::Instant::from_std(ahead(
            tokio::time::Instant::now().into_std(),
            self.options.shutdown_writes,
        ));
        let runs: Vec<Arc<Run>> = lock(&self.local).values().cloned().collect();
        let mut stopped = Vec::new();
        let mut writes = tokio::task::JoinSet::new();
        for run in runs {
            {
                let mut state = lock(&run.state);
                if state.ending != Ending::Running {
                    // Lost, or ended and recording its outcome (waited for
                    // below), or started while closing (its supervisor
                    // records its stop).
                    continue;
                }
                state.ending = Ending::Stopped;
                if let Some(abort) = &state.abort {
                    abort.abort();
                }
            }
            // An operation that never yields cannot be aborted: its task is
            // recorded now, not when (if ever) it ends.
            let record = Record::stop(self, &run);
            let stop = record.stops();
            let store = Arc::clone(&self.store);
            stopped.push(Arc::clone(&run));
            writes.spawn(off_workers(move || {
                let written = record.write(&*store, &run);
                (run, stop, written)
            }));
        }
        let mut unrecorded = 0;
        let mut settle = |joined: Result<Result<StopWrite, Unfinished>, tokio::task::JoinError>| {
            let recorded = match joined {
                Ok(Ok((run, stop, written))) => {
                    self.recorded(&run, stop, written.map_err(StoreCall::Store))
                }
                // A write that panicked recorded nothing.
                Ok(Err(_)) | Err(_) => false,
            };
            unrecorded += usize::from(!recorded);
        };
        let mut background = lock(&self.background).take();
        let _ = tokio::time::timeout_at(deadline, async {
            while let Some(joined) = writes.join_next().await {
                settle(joined);
            }
            // The background loop ends the step it is in and stops: a claim
            // under way lands in the store whatever becomes of the loop,
            // and its tasks, started now, are stopped and released (below).
            let _ = self.stop.send(true);
            if let Some(handle) = background.as_mut() {
                let _ = handle.await;
                background = None;
            }
            // Operations ending (a stopped one records nothing), outcomes of
            // operations that ended in the grace, runs a claim started
            // while closing, spawns still creating.
            self.drain().await;
        })
        .await;
        // Writes that returned just as the allowance ran out count as made.
        while let Some(joined) = writes.try_join_next() {
            settle(joined);
        }
        unrecorded += writes.len();
        writes.detach_all();
        let not_stopped = stopped
            .iter()
            .filter(|run| {
                lock(&run.state)
                    .abort
                    .as_ref()
                    .is_some_and(|abort| !abort.is_finished())
            })
            .count();
        // What is left is handed over: operations that did not stop (their
        // tasks are recorded), and writes or creates still under way.
        let left: Vec<Arc<Run>> = lock(&self.local).drain().map(|(_, run)| run).collect();
        unrecorded += left
            .iter()
            .filter(|run| !matches!(run.ending(), Ending::Stopped | Ending::Lost))
            .count();
        unrecorded += self.starting.load(Ordering::SeqCst);
        let _ = self.stop.send(true);
        if let Some(handle) = background {
            // Still in a step at the deadline (a store call that hangs).
            handle.abort();
            let _ = handle.await;
        }
        // Taken: a later call reports what it did, not this one's counts.
        let stopped = std::mem::take(&mut *lock(&self.stopped));
        ShutdownReport {
            running,
            released: stopped.released,
            failed: stopped.failed,
            not_stopped,
            unrecorded: unrecorded + stopped.unrecorded,
        }
    }

    /// Waits until no run is left and no spawn is starting one.
    async fn drain(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.local).is_empty() && self.starting.load(Ordering::SeqCst) == 0 {
                return;
            }
            // Bounded wait: a run that ends between the check and the
            // registration is seen on the next pass.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }
}

/// A stop shutdown wrote for a run: the run, what it was, and what the
/// store made of it.
type StopWrite = (Arc<Run>, Option<Stop>, crate::Result<Transition>);

/// The error of a task this instance claimed on its last attempt and
/// could not resume, its resume having panicked (`why`): small
/// ([`SMALL_ERROR_BYTES`](crate::SMALL_ERROR_BYTES), its message cut
/// short if need be), so that the store takes it over any task.
fn resume_panicked_error(instance: &str, id: &TaskId, why: &str) -> Value {
    let message = format!(
        "task {id} could not be resumed: instance {instance} claimed it on its last attempt, and resuming it panicked: {why}"
    );
    small_error(json!({
        "code": "resume_panicked",
        "instance": instance,
        "message": message,
    }))
}

/// The instant `by` after `from`, or, past the last one an `Instant` holds,
/// one [`FAR`] after it: an interval or allowance of `Duration::MAX` (a
/// host's "never") is far off, not an overflow that panics. Every instant
/// the manager computes ahead is computed here.
pub(super) fn ahead(from: Instant, by: Duration) -> Instant {
    from.checked_add(by)
        .or_else(|| from.checked_add(FAR))
        .unwrap_or(from)
}

/// How far off [`ahead`] puts an instant past the last one an `Instant`
/// holds: 30 years, as Tokio's timers take a duration too long for them.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// How often a run's lease is renewed: the host's period, or a third of
/// the lease, and never more than a third of it. Renewals run on watch
/// ticks, which the host keeps well under the lease
/// ([`ManagerOptions::watch_interval`](super::ManagerOptions::watch_interval)).
fn renewal_period(set: Option<Duration>, lease: Option<Duration>) -> Option<Duration> {
    let third = lease.map(|lease| lease / 3);
    match (set, third) {
        (Some(set), Some(third)) => Some(set.min(third)),
        (set, third) => set.or(third),
    }
}

/// How a due renewal of a run's lease is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renewal {
    /// In this tick's batch.
    Batched,
    /// On a call of its own: a look at the run, or the batch it is in, has
    /// been held up for a third of its lease (a call for the task that
    /// hangs would hold up any batch it joins). A look that is merely
    /// slower than a tick (many runs, each read a round trip) keeps the
    /// run in the batch: renewed one by one, thousands outlast a lease.
    Alone,
    /// Not now: a renewal of the run is under way.
    UnderWay,
}

/// How the due renewal of a run in `state`, whose lease is `lease` and
/// renewal period `every`, is made at `now`.
fn renewal(state: &RunState, now: Instant, lease: Option<Duration>, every: Duration) -> Renewal {
    if state.renewing_alone {
        return Renewal::UnderWay;
    }
    let stuck =
        |since: Instant| now.duration_since(since) >= lease.map_or(every, |lease| lease / 3);
    match state.batched {
        Some(since) if stuck(since) => Renewal::Alone,
        Some(_) => Renewal::UnderWay,
        None if state.looking.is_some_and(stuck) => Renewal::Alone,
        None => Renewal::Batched,
    }
}

/// A look at a run under way, ended when this is dropped (however the
/// task holding it ends).
struct Looked(Arc<Run>);

impl Drop for Looked {
    fn drop(&mut self) {
        lock(&self.0.state).looking = None;
    }
}

/// A claim pass under way ([`Shared::claiming`]) until dropped.
struct UnderWay<'a>(&'a AtomicUsize);

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
