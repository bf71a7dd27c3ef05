//! A handle's snapshot of `active/`: the running tasks' listing keys and
//! file bytes, in listing order.
//!
//! Kept current from change notices (`watch`: one `read` when nothing
//! changed, one file read per name that did), or, where there are none,
//! proven current by file status (`stamp`). A listing then costs the page it
//! returns, counting the running tasks costs nothing, and memory stays near
//! the size of the files: tasks are kept as their bytes and decoded only
//! when returned.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};

use time::OffsetDateTime;

use crate::backend::{Position, Scan, Scope, Skipped};
use crate::file::codec::Keys;
use crate::file::stamp::Stamp;
use crate::file::watch::Watch;
use crate::id::TaskId;
use crate::task::TaskStatus;

/// The file bytes a snapshot keeps in all; past it, entries keep their keys
/// only and their files are read again when returned.
pub(crate) const MAX_CACHED_BYTES: usize = 64 << 20;

/// One handle's snapshot, behind its lock.
#[derive(Debug)]
pub(crate) struct ActiveSnapshot {
    state: Mutex<State>,
    /// Whether to use change notices (tests turn them off to exercise the
    /// file-status proof).
    pub watch: AtomicBool,
}

impl Default for ActiveSnapshot {
    fn default() -> ActiveSnapshot {
        ActiveSnapshot {
            state: Mutex::default(),
            watch: AtomicBool::new(true),
        }
    }
}

impl ActiveSnapshot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole; a poisoned lock holds a
        // whole state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The snapshot itself.
#[derive(Debug, Default)]
pub(crate) struct State {
    entries: BTreeMap<Position, Entry>,
    /// Where each task is in `entries`.
    created: HashMap<TaskId, OffsetDateTime>,
    /// Files that could not be read: reported by every listing until they
    /// change or go.
    pub bad: BTreeMap<TaskId, Bad>,
    /// What the next listing reports once (files set aside, foreign names).
    pub reported: Vec<Skipped>,
    /// Non-terminal entries.
    active: usize,
    /// Bytes kept in `entries`.
    cached: usize,
    /// The change notices, live since the last full pass.
    pub watch: Option<Watch>,
    /// Whether the snapshot covers every change: a full pass was made and
    /// the watch (or, without one, `dir`) has held since.
    pub complete: bool,
    /// Without a watch: `active/`'s settled status before the last full pass.
    pub dir: Option<Stamp>,
    /// Listings served without reading a file (for the tests).
    #[cfg(test)]
    pub hits: u64,
    /// Gets served from the snapshot (for the tests).
    #[cfg(test)]
    pub gets: u64,
    /// Files not read because their entry was provably current (for the tests).
    #[cfg(test)]
    pub reused: u64,
    /// Task files read into the snapshot (for the tests).
    #[cfg(test)]
    pub reads: u64,
}

/// A task file as the snapshot keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub status: TaskStatus,
    pub revision: u64,
    pub expires_at: Option<OffsetDateTime>,
    pub lease_expires_at: Option<OffsetDateTime>,
    /// The file's bytes, unless the snapshot is full.
    pub bytes: Option<Box<[u8]>>,
    /// The file's status, if settled when read (the proof without a watch).
    pub stamp: Option<Stamp>,
}

/// An unreadable file, and whether setting it aside was tried yet.
#[derive(Debug, Clone)]
pub(crate) struct Bad {
    pub report: Skipped,
    pub stamp: Option<Stamp>,
    pub tried: bool,
}

impl State {
    /// The entry of task `id`, with its position.
    pub fn get(&self, id: &TaskId) -> Option<(Position, &Entry)> {
        let created_at = *self.created.get(id)?;
        let position = Position {
            created_at,
            id: id.clone(),
        };
        let entry = self.entries.get(&position)?;
        Some((position, entry))
    }

    /// Puts task `id`'s entry in, replacing any other.
    pub fn put(&mut self, id: &TaskId, keys: &Keys, bytes: Vec<u8>, stamp: Option<Stamp>) {
        self.remove(id);
        self.bad.remove(id);
        let keep = self.cached + bytes.len() <= MAX_CACHED_BYTES;
        if keep {
            self.cached += bytes.len();
        }
        if !keys.status.is_terminal() {
            self.active += 1;
        }
        self.created.insert(id.clone(), keys.created_at);
        self.entries.insert(
            Position {
                created_at: keys.created_at,
                id: id.clone(),
            },
            Entry {
                status: keys.status,
                revision: keys.revision,
                expires_at: keys.expires_at,
                lease_expires_at: keys.lease_expires_at,
                bytes: keep.then(|| bytes.into_boxed_slice()),
                stamp,
            },
        );
    }

    /// Takes task `id`'s entry out.
    pub fn remove(&mut self, id: &TaskId) {
        let Some(created_at) = self.created.remove(id) else {
            return;
        };
        let position = Position {
            created_at,
            id: id.clone(),
        };
        if let Some(entry) = self.entries.remove(&position) {
            if !entry.status.is_terminal() {
                self.active -= 1;
            }
            if let Some(bytes) = &entry.bytes {
                self.cached -= bytes.len();
            }
        }
    }

    /// Marks task `id`'s file unreadable.
    pub fn mark_bad(&mut self, id: &TaskId, report: Skipped, stamp: Option<Stamp>) {
        self.remove(id);
        self.bad.insert(
            id.clone(),
            Bad {
                report,
                stamp,
                tried: false,
            },
        );
    }

    /// Every id the snapshot knows, readable or not.
    pub fn ids(&self) -> impl Iterator<Item = &TaskId> {
        self.created.keys().chain(self.bad.keys())
    }

    /// How many entries are non-terminal: the running tasks.
    pub fn active(&self) -> usize {
        self.active
    }

    /// The bytes the snapshot keeps, and the entries.
    #[cfg(test)]
    pub fn size(&self) -> (usize, usize) {
        (self.cached, self.entries.len())
    }

    /// The entries `scan` asks for (position and filters; expiry by the keys
    /// kept), in listing order, at most `scan.limit`.
    pub fn select<'a>(&'a self, scan: &'a Scan) -> impl Iterator<Item = (&'a Position, &'a Entry)> {
        let from = match &scan.after {
            Some(after) => Bound::Excluded(after.clone()),
            None => Bound::Unbounded,
        };
        self.entries
            .range((from, Bound::Unbounded))
            .filter(|(_, e)| {
                (scan.scope == Scope::All || !e.status.is_terminal())
                    && scan.status.is_none_or(|s| s == e.status)
                    && scan
                        .expired_at
                        .is_none_or(|at| e.expires_at.is_some_and(|x| x <= at))
                    && scan
                        .lapsed_at
                        .is_none_or(|at| e.lease_expires_at.is_some_and(|x| x <= at))
            })
    }

    /// The terminal tasks still in `active/` (interrupted moves).
    pub fn unmoved(&self) -> Vec<TaskId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.status.is_terminal())
            .map(|(p, _)| p.id.clone())
            .collect()
    }
}
