//! Change feeds: how a backend tells a waiting host, as soon as it knows,
//! which tasks were written by anyone (another process, another host).
//!
//! A feed is a hint, never the truth: the host reads the named tasks from
//! the store, as it would on a polling tick. A host keeps polling beside a
//! feed (as the fallback), and a feed that may have missed changes says so
//! with [`Changes::Missed`]. Blocking and std-only: a host with an async
//! runtime waits on it from a thread of its own.

use std::fmt;
use std::time::Duration;

use crate::id::TaskId;

/// What a [`ChangeFeed`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Changes {
    /// These tasks were written (created, updated, finished or removed)
    /// since the last wait, each named once; empty if the wait timed out.
    Tasks(Vec<TaskId>),
    /// The feed may have missed changes (it has just begun to listen, lost
    /// its connection and is back, or cannot listen now): any task may have
    /// changed.
    Missed,
}

/// A backend's source of change notices, behind a [`ChangeFeed`].
pub trait ChangeSource: Send {
    /// Blocks until tasks change or `timeout` passes.
    fn wait(&mut self, timeout: Duration) -> Changes;
}

/// A blocking subscription to the changes of one store, from
/// [`TaskStore::changes`](crate::TaskStore::changes).
///
/// Wait on it, or drop it: a feed kept but no longer waited on may hold
/// what its backend keeps for it. Over PostgreSQL its connection goes on
/// listening once it has waited, and the server keeps every notification
/// of the cluster until each listening session has taken it: a session
/// whose client reads nothing stops the cleanup of that queue (8 GB by
/// default; the server warns in its log from half full), and once it is
/// full every write that notifies, this store's among them, fails.
pub struct ChangeFeed {
    source: Box<dyn ChangeSource>,
}

impl ChangeFeed {
    /// A feed over `source` (for backends).
    pub fn new(source: impl ChangeSource + 'static) -> ChangeFeed {
        ChangeFeed {
            source: Box::new(source),
        }
    }

    /// Blocks until tasks change or `timeout` passes, and says which.
    pub fn wait(&mut self, timeout: Duration) -> Changes {
        self.source.wait(timeout)
    }
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeFeed").finish_non_exhaustive()
    }
}
