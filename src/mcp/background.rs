//! The background work of a manager: the loop of watch ticks (renewals,
//! looks at what peers persisted) and the loop of claims, reaps and
//! sweeps, whose passes each contain their own panics.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::time::Instant;

use time::OffsetDateTime;
use tokio::sync::watch;

use super::run::{Shared, panic_message};
use super::worker::ahead;
use crate::clock::Clock;
use crate::id::TaskId;
use crate::occurrences::Warning;
use crate::store::TaskStore;

/// The background work, until stopped or until nothing refers to the
/// manager any more: watch ticks (renewals among them) on a loop of their
/// own, and claims, reaps and sweeps on another, so that a long pass (a
/// sweep of a backlog of expired tasks after an outage, a store call that
/// hangs) never holds a lease renewal up past the lease. Each pass of the
/// second runs as a task of its own, so that a panic there (a bug in the
/// manager's code, or in a host store's method it calls on its async
/// side) ends that pass alone, counted and said
/// ([`Shared::panicked`]), and later passes go on; the second loop is a
/// task of its own besides, so that a panic of its own code between
/// passes stops it, logged, and never the renewals. It ends when this
/// does.
pub(super) async fn background(shared: Weak<Shared>, stop: watch::Receiver<bool>) {
    let maintenance = AbortOnDrop(tokio::spawn(maintaining(
        Weak::clone(&shared),
        stop.clone(),
    )));
    tokio::join!(watching(shared, stop), async move {
        let mut maintenance = maintenance;
        if let Err(e) = (&mut maintenance.0).await
            && e.is_panic()
        {
            let panic = e.into_panic();
            tracing::error!(
                error = %panic_message(&*panic),
                "the manager's loop of claims, reaps and sweeps panicked between its passes: it is stopped; leases are still renewed"
            );
            crate::panics::drop_payload(panic);
        }
    });
}

/// A pass of the loop of claims, reaps and sweeps: the one a panic there
/// is said with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pass {
    Claim,
    Reap,
    Sweep,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Claim => "claim",
            Pass::Reap => "reap",
            Pass::Sweep => "sweep",
        }
    }
}

impl Shared {
    /// Says a panic of the loop of claims, reaps and sweeps, in `pass` (as
    /// it resumed task `task`, if it was one): counted, the first said at
    /// once and those that follow at most once a minute by the store's
    /// clock, with how many there were, as a store says its sink's panics
    /// ([`Occurrences`](crate::occurrences::Occurrences)): a pass that panics at
    /// every round does not flood the log. Never panics itself: a host's
    /// subscriber that panics at the line costs the line (the claim pass
    /// hands back its task after this, and the loop goes on).
    pub(super) fn panicked(&self, pass: Pass, task: Option<&TaskId>, panic: Box<dyn Any + Send>) {
        let error = panic_message(&*panic);
        crate::panics::drop_payload(panic);
        let task = task.map(tracing::field::display);
        let clock = StoreTime(&*self.store);
        let say = |said: Warning| {
            crate::panics::contained(|| match said.since_last_warning {
                None => tracing::error!(
                    pass = %pass.name(),
                    task,
                    error = %error,
                    panics = said.count,
                    "a pass of the manager's claims, reaps and sweeps panicked; later passes go on (later panics are counted, and said at most once a minute)"
                ),
                Some(since) => tracing::error!(
                    pass = %pass.name(),
                    task,
                    error = %error,
                    panics = said.count,
                    since_last_warning = since,
                    "passes of the manager's claims, reaps and sweeps went on panicking; later passes go on"
                ),
            });
        };
        self.maintenance_panics.count_one(&clock, say);
    }
}

/// The store's time ([`TaskStore::now`]), as the clock the loop's panics
/// are said by (a store says its sink's by its own clock); the system's,
/// should the store's `now` panic too.
struct StoreTime<'a>(&'a dyn TaskStore);

impl std::fmt::Debug for StoreTime<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreTime(..)")
    }
}

impl Clock for StoreTime<'_> {
    fn now(&self) -> OffsetDateTime {
        catch_unwind(AssertUnwindSafe(|| self.0.now())).unwrap_or_else(|panic| {
            crate::panics::drop_payload(panic);
            OffsetDateTime::now_utc()
        })
    }
}

/// A task that is aborted when this is dropped (the background work
/// aborted at shutdown takes its maintenance loop, and the pass under way,
/// with it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watch ticks: renewals, and looks at what peers persisted.
async fn watching(shared: Weak<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(this) = shared.upgrade() else { return };
        this.watch();
        let pause = this.options.watch_pause();
        drop(this);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Runs `pass` of `this`, `work`, as a task of its own, to its end: a
/// panic there ends that pass alone, said ([`Shared::panicked`]).
async fn contained<F>(this: &Shared, pass: Pass, work: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut running = AbortOnDrop(tokio::spawn(work));
    if let Err(e) = (&mut running.0).await
        && e.is_panic()
    {
        this.panicked(pass, None, e.into_panic());
    }
}

/// Claims, reaps and sweeps, each pass contained ([`contained`]).
async fn maintaining(shared: Weak<Shared>, mut stop: watch::Receiver<bool>) {
    // The first reap waits a reap interval: a host registers its resume
    // handlers after the manager starts (each registration claims at
    // once), and a reap before them would fail the orphans they resume.
    let mut next_reap = match shared.upgrade() {
        Some(this) => ahead(Instant::now(), this.options.reap_interval),
        None => return,
    };
    let mut next_sweep = Instant::now();
    let mut claim_now = false;
    loop {
        let Some(this) = shared.upgrade() else { return };
        let now = Instant::now();
        if now >= next_reap || claim_now {
            // Claim before reaping: a resumable orphan is claimed, not failed.
            let claiming = Arc::clone(&this);
            contained(&this, Pass::Claim, async move { claiming.claim().await }).await;
        }
        if now >= next_reap {
            let reaping = Arc::clone(&this);
            contained(&this, Pass::Reap, async move { reaping.reap().await }).await;
            next_reap = ahead(now, this.options.reap_interval);
        }
        if now >= next_sweep {
            let sweeping = Arc::clone(&this);
            contained(&this, Pass::Sweep, async move { sweeping.sweep().await }).await;
            next_sweep = ahead(now, this.options.sweep_interval);
        }
        let pause = this.options.watch_pause();
        let wake = Arc::clone(&this);
        drop(this);
        claim_now = tokio::select! {
            _ = tokio::time::sleep(pause) => false,
            _ = wake.claim_now.notified() => true,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
    }
}
