//! Following the store's change feed: a thread waits on it, and each
//! change to a task this instance runs triggers an immediate look at it
//! (the watch ticks poll beside it).

use std::sync::Arc;
use std::time::Duration;

use super::calls::{get_all, lock};
use super::run::{Run, Shared};
use crate::changes::Changes;
use crate::id::TaskId;

impl Shared {
    /// Reads the tasks among `ids` this instance runs and acts on them, as a
    /// watch tick would (without renewing).
    async fn watch_changed(self: &Arc<Self>, ids: Vec<TaskId>) {
        let runs: Vec<Arc<Run>> = {
            let local = lock(&self.local);
            ids.iter().filter_map(|id| local.get(id).cloned()).collect()
        };
        match runs.as_slice() {
            [] => return,
            [run] => return self.look(run).await,
            _ => {}
        }
        // Many (every run, after a feed missed notices): read in one store
        // call, not a call each.
        let ids = runs.iter().map(|run| run.id.clone()).collect();
        let Ok(found) = get_all(self.options.reads, &self.store, ids).await else {
            // A read that panicked: the next tick reads again.
            return;
        };
        for (run, found) in runs.iter().zip(found) {
            self.looked(run, found.map_err(drop)).await;
        }
    }
}

/// If the store has a change feed, a thread of its own waits on it and each
/// change to a task this instance runs triggers an immediate look at that
/// task (a `tasks/cancel` sent to another instance is seen at once, not on
/// the next tick); a feed that may have missed changes triggers a look at
/// every task this instance runs, a task whose read is under way included
/// (that read may have been made before the change whose notice was lost);
/// polling goes on beside it as the fallback. The thread
/// stops with the manager: at shutdown, or when it is dropped (the task
/// that takes the changes ends, and the thread with it at its next wait).
/// What the thread read and the task has not taken yet is one [`Pending`]
/// set, bounded however far the task falls behind the feed.
pub(super) fn follow_changes(shared: &Arc<Shared>) {
    let Some(mut feed) = shared.store.changes() else {
        return;
    };
    let pending = Arc::new(Pending::default());
    let stop = shared.stop.subscribe();
    let spawned = std::thread::Builder::new()
        .name("taskstore-changes".to_owned())
        .spawn({
            let pending = Arc::clone(&pending);
            move || {
                // Until the task that takes the changes is gone.
                while !*stop.borrow() && Arc::strong_count(&pending) > 1 {
                    let changes = feed.wait(Duration::from_millis(500));
                    if changes != Changes::Tasks(Vec::new()) {
                        pending.add(changes);
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not follow the store's changes; polling only");
        return;
    }
    let weak = Arc::downgrade(shared);
    let mut stop = shared.stop.subscribe();
    tokio::spawn(async move {
        loop {
            // A manager dropped without `shutdown` drops `stop`'s sender:
            // the wait ends then too.
            tokio::select! {
                () = pending.ready.notified() => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            let Some(changes) = pending.take() else {
                continue;
            };
            let Some(this) = weak.upgrade() else { return };
            let ids = match changes {
                Changes::Tasks(ids) => ids,
                // Any task may have changed: each run's is read again, one
                // whose read is under way too (it may have read before).
                Changes::Missed => lock(&this.local).keys().cloned().collect(),
            };
            this.watch_changed(ids).await;
        }
    });
}

/// The most task ids [`Pending`] keeps: past them, any task may have
/// changed, and the next look is at every run.
const MAX_PENDING: usize = 4_096;

/// The changes a feed's thread read that the manager has not taken yet,
/// merged into one: the ids, each once, at most [`MAX_PENDING`] of them
/// (past that, or after a feed that may have missed some, "any task").
#[derive(Default)]
struct Pending {
    changes: std::sync::Mutex<Option<Changes>>,
    ready: tokio::sync::Notify,
}

impl Pending {
    /// Merges `changes` in, and wakes the taker.
    fn add(&self, changes: Changes) {
        {
            let mut pending = lock(&self.changes);
            *pending = Some(merged(pending.take(), changes));
        }
        self.ready.notify_one();
    }

    /// What is pending, if anything; nothing is pending after.
    fn take(&self) -> Option<Changes> {
        lock(&self.changes).take()
    }
}

/// `pending` and `new` as one: the ids of both, each once, or `Missed` if
/// either is, or if they name more than [`MAX_PENDING`] tasks.
fn merged(pending: Option<Changes>, new: Changes) -> Changes {
    let mut ids = match (pending, new) {
        (Some(Changes::Missed), _) | (_, Changes::Missed) => return Changes::Missed,
        (Some(Changes::Tasks(mut ids)), Changes::Tasks(more)) => {
            ids.extend(more);
            ids
        }
        (None, Changes::Tasks(ids)) => ids,
    };
    ids.sort();
    ids.dedup();
    if ids.len() > MAX_PENDING {
        Changes::Missed
    } else {
        Changes::Tasks(ids)
    }
}

#[cfg(test)]
mod pending_tests {
    use super::{Changes, MAX_PENDING, Pending};
    use crate::TaskId;

    fn ids(range: std::ops::Range<usize>) -> Vec<TaskId> {
        range
            .map(|n| TaskId::parse(&format!("t{n:05}")).unwrap())
            .collect()
    }

    /// What the feed's thread reads while the manager is busy is kept as
    /// one set: each task once, and past `MAX_PENDING` tasks, "any task"
    /// (a look at every run), so it stays bounded however far the manager
    /// falls behind. (The feed's changes queued in an unbounded channel,
    /// one batch per wait, every write of every host among them.)
    #[test]
    fn changes_not_yet_taken_are_one_bounded_set() {
        let pending = Pending::default();
        assert_eq!(pending.take(), None);
        pending.add(Changes::Tasks(ids(0..3)));
        pending.add(Changes::Tasks(ids(2..5)));
        assert_eq!(pending.take(), Some(Changes::Tasks(ids(0..5))));
        assert_eq!(pending.take(), None, "taken");
        for batch in 0..(MAX_PENDING / 100 + 1) {
            pending.add(Changes::Tasks(ids(batch * 100..batch * 100 + 100)));
            pending.add(Changes::Tasks(ids(batch * 100..batch * 100 + 100)));
        }
        assert_eq!(pending.take(), Some(Changes::Missed), "past the bound");
        pending.add(Changes::Tasks(ids(0..1)));
        pending.add(Changes::Missed);
        pending.add(Changes::Tasks(ids(1..2)));
        assert_eq!(pending.take(), Some(Changes::Missed));
    }
}
