//! The dry runs of the passes over many tasks: what a sweep would delete and
//! what a reap would do, now, judged by the same rules, without doing it.

use std::time::Duration;

use time::OffsetDateTime;

use crate::backend::{Backend, Position, Scan, Scope, join_skipped};
use crate::error::Result;
use crate::lease;
use crate::query::Page;
use crate::rules::Store;
use crate::task::Task;

/// How many tasks one scan of [`Store::expired`] reads.
const BATCH: usize = 1_024;

/// A running task whose owner's lease has lapsed, and what
/// [`TaskStore::reap`](crate::TaskStore::reap) would do with it now.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Orphan {
    /// The task as stored.
    pub task: Task,
    /// What a reap by this handle would do with it now.
    pub fate: OrphanFate,
}

/// What a reap would do with an [`Orphan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrphanFate {
    /// Fail it as orphaned.
    Reap,
    /// Leave it: it is resumable, and within its claim grace (this long
    /// after its lease lapsed) an instance with a resume handler for its
    /// kind may still claim it ([`TaskStore::claim`](crate::TaskStore::claim)).
    AwaitingClaim {
        /// The claim grace of this handle.
        grace: Duration,
    },
}

impl Orphan {
    /// `task` as an orphan at `now`, with what a reap by a claim grace of
    /// `grace` would do with it; `None` unless it is a live running task
    /// whose lease has lapsed. The rule [`Store::orphans`] and a reap go
    /// by, for a caller that holds the tasks already (the `taskstore`
    /// command's dry run, from a census that changes nothing), with one
    /// time for both judgments: a handle's own judges expiry by its time
    /// ([`Store::now`]) and the lease by what its clock reads, which are
    /// one time but after a clock set back.
    pub fn judge(task: Task, now: OffsetDateTime, grace: Duration) -> Option<Orphan> {
        if task.is_expired_at(now) || !task.is_orphan_at(now) {
            return None;
        }
        let fate = if lease::is_reapable(&task, now, grace) {
            OrphanFate::Reap
        } else {
            OrphanFate::AwaitingClaim { grace }
        };
        Some(Orphan { task, fate })
    }
}

impl<B: Backend> Store<B> {
    /// The tasks a [`sweep`](crate::TaskStore::sweep) would delete now:
    /// every stored task expired at [`now`](Store::now), in listing order.
    ///
    /// Changes no task, and cleans up nothing a sweep cleans: a file
    /// store's stale `expiring/` entries (their tasks' files gone) stay
    /// for the sweep, which counts them in [`Swept::cleaned`](crate::Swept::cleaned).
    /// It reads what a sweep reads (history included); entries that cannot
    /// be read are reported as events and left out, and a backend may set
    /// them aside as any scan does.
    pub fn expired(&self) -> Result<Vec<Task>> {
        let now = self.time();
        let mut scan = Scan::new(Scope::All, BATCH);
        scan.expired_at = Some(now);
        Ok(self.scan_through(scan)?.tasks)
    }

    /// Every stored task, expired ones included (a listing leaves those out
    /// and deletes them), in listing order, with the entries that could not
    /// be read: what the command's `stats` and dry runs judge over a
    /// database. Each task comes without what it carries for its host
    /// (its status message, result, error, input requests, metadata, its
    /// resume state's input and checkpoint: see
    /// [`Scan::payloads`](crate::backend::Scan::payloads)), so that the
    /// page does not grow with the store's payloads.
    ///
    /// Changes no task. Entries that cannot be read are reported as events
    /// too, and a backend may set them aside as any scan does.
    pub fn stored(&self) -> Result<Page> {
        let mut scan = Scan::new(Scope::All, BATCH);
        scan.payloads = false;
        self.scan_through(scan)
    }

    /// Every task `scan` finds, from its start, in listing order, and the
    /// entries it could not read (reported). A task the backend returned
    /// that the scan does not ask for ([`Scan::matches`]: a backend that
    /// filters less than it should) is left out.
    fn scan_through(&self, mut scan: Scan) -> Result<Page> {
        let mut page = Page {
            tasks: Vec::new(),
            next_cursor: None,
            skipped: Vec::new(),
        };
        loop {
            let batch = self.backend.scan(&scan)?;
            let exhausted = batch.tasks.len() < scan.limit;
            self.notify_skipped(join_skipped(&mut page.skipped, batch.skipped));
            let Some(last) = batch.tasks.last() else {
                break;
            };
            scan.after = Some(Position::of(last));
            // Shaped as the scan asks, whatever the backend returned: a
            // batch at a time is all that is held whole.
            let kept = batch.tasks.into_iter().filter(|t| scan.matches(t));
            page.tasks.extend(kept.map(|task| scan.shape(task)));
            if exhausted {
                break;
            }
        }
        Ok(page)
    }

    /// Every live running task whose lease has lapsed by the clock's
    /// reading (not expired at [`now`](Store::now)), in listing order, each
    /// with what [`reap`](crate::TaskStore::reap) would do with it (by this
    /// handle's claim grace): the leases judged as a reap judges them.
    ///
    /// Changes no task; reads active tasks only, as a reap does.
    pub fn orphans(&self) -> Result<Vec<Orphan>> {
        let super::Reading { now, clock, .. } = self.reading();
        let batch = self.backend.scan(&super::maintenance::lapsed(clock))?;
        self.notify_skipped(&batch.skipped);
        let grace = self.settings.claim_grace();
        let mut orphans: Vec<Orphan> = batch
            .tasks
            .into_iter()
            .filter(|task| !task.is_expired_at(now))
            .filter_map(|task| Orphan::judge(task, clock, grace))
            .collect();
        orphans.sort_by(|a, b| Task::listing_order(&a.task, &b.task));
        Ok(orphans)
    }
}
