//! What a handle knows of `done/` for paging history: each finished
//! task's keys in listing order ([`Known`]), and the keys themselves.

use std::collections::{BTreeMap, BTreeSet};

use time::OffsetDateTime;

use crate::backend::{Scan, UnreadableAction};
use crate::error::Error;
use crate::file::codec;
use crate::file::moment::Moment;
use crate::file::places::Places;
use crate::file::scan;
use crate::file::stamp::Stamp;
use crate::file::watch::Watch;
use crate::id::TaskId;
use crate::status::TaskStatus;
use crate::task::Task;

#[derive(Debug, Default)]
pub(super) struct Known {
    /// Each finished task's keys, and its file's status when they were
    /// read, if it had settled (a file whose status is the same is the
    /// same file), in listing order (creation time, id): a page is a
    /// range of it.
    pub(super) files: BTreeMap<(Moment, TaskId), Held>,
    /// Where each task is in `files`, by its id.
    pub(super) places: Places,
    /// `files` and `unreadable` are `done/` as it was when `watch` was
    /// last drained, or (without a watch) when `dir` was taken; and no
    /// entry of `done/` that is no task file's name was left there then.
    pub(super) complete: bool,
    /// Tasks whose file in `done/` was left where it is unreadable (a newer
    /// format, an I/O error, a corrupt file the store could not move): each
    /// listing looks at them again, and reports them.
    pub(super) unreadable: BTreeSet<TaskId>,
    /// Change notices of `done/`, from the first listing of history on
    /// (where there is inotify).
    pub(super) watch: Option<Watch>,
    /// Without a watch: `done/`'s settled status, taken before it was last
    /// listed, when every entry was a task whose file had settled. While
    /// it is unchanged, so are the entries, naming the same files.
    pub(super) dir: Option<Stamp>,
    /// The first file the listing under way could not read for want of
    /// descriptors or memory: the listing fails with it (the file is left
    /// unreadable, looked at again by the next listing).
    pub(super) short_of: Option<Error>,
}

impl Known {
    /// Notes `e`, a file's read error, if it is for want of descriptors or
    /// memory (the listing then fails with the first).
    pub(super) fn note_short_of(&mut self, e: &Error) {
        scan::note_short_of(&mut self.short_of, e);
    }

    /// What is known of task `id`.
    pub(super) fn get(&self, id: &TaskId) -> Option<&Held> {
        let at = self.places.get(id)?;
        self.files.get(&(at, id.clone()))
    }

    /// Knows task `id`'s status, read from the file its keys were read
    /// from (placed by its index entry, it was known without one).
    pub(super) fn learn(&mut self, id: &TaskId, status: TaskStatus) {
        let Some(at) = self.places.get(id) else {
            return;
        };
        if let Some((_, keys)) = self.files.get_mut(&(at, id.clone())) {
            keys.status = Some(status);
        }
    }

    /// Knows task `id` by `keys`, read from a file of this status: in its
    /// entry, where it stays at its place in listing order.
    pub(super) fn insert(&mut self, id: TaskId, stamp: Option<Box<Stamp>>, keys: Keys) {
        if self.places.get(&id) == Some(keys.at)
            && let Some(held) = self.files.get_mut(&(keys.at, id.clone()))
        {
            self.unreadable.remove(&id);
            *held = (stamp, keys);
            return;
        }
        self.remove(&id);
        self.places.insert(&id, keys.at);
        self.files.insert((keys.at, id), (stamp, keys));
    }

    /// Knows task `id` no longer.
    pub(super) fn remove(&mut self, id: &TaskId) {
        self.unreadable.remove(id);
        let files = &self.files;
        if let Some(at) = self
            .places
            .remove(id, |at| files.contains_key(&(at, id.clone())))
        {
            self.files.remove(&(at, id.clone()));
        }
    }

    /// Knows only the tasks `listed` says are listed.
    pub(super) fn forget_unless(&mut self, listed: impl Fn(&TaskId) -> bool) {
        let gone: Vec<TaskId> = self
            .files
            .keys()
            .filter(|(_, id)| !listed(id))
            .map(|(_, id)| id.clone())
            .collect();
        for id in &gone {
            self.remove(id);
        }
    }

    /// Knows task `id` as its file's failure to read was reported with
    /// `action`: left where it is (looked at again by every listing), or
    /// gone.
    pub(super) fn unread(&mut self, id: &TaskId, action: UnreadableAction) {
        self.remove(id);
        if action == UnreadableAction::LeftInPlace {
            self.unreadable.insert(id.clone());
        }
    }

    /// Knows `files` (each task once), and nothing else: a handle's first
    /// pass over `done/` (a later one revises what it knows). What it knew
    /// is let go first. The map is built packed (a sorted run fills each
    /// node whole, where entries put in one at a time leave them about two
    /// thirds full) from `files` where it lies: its entries are the map's
    /// own, so collecting them copies nothing.
    pub(super) fn replace(&mut self, files: Vec<((Moment, TaskId), Held)>) {
        self.files.clear();
        self.places.clear();
        for ((at, id), _) in &files {
            self.places.insert(id, *at);
        }
        self.files = BTreeMap::from_iter(files);
    }
}

/// A finished task's keys as [`Known`] holds them, with its file's status
/// (boxed: kept only without a watch, and four times the keys' size).
pub(super) type Held = (Option<Box<Stamp>>, Keys);

/// Where a finished task lists, and what a scan filters it by: 40 bytes,
/// its times `Moment`s (an `i128` of nanoseconds and two `OffsetDateTime`s
/// made them 64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Keys {
    /// The task's creation time: its place in listing order (with its id).
    pub(super) at: Moment,
    /// `None` while the task is known by its `expiring/` entry alone (some
    /// terminal status): learned when its file is read.
    pub(super) status: Option<TaskStatus>,
    pub(super) expires_at: Option<Moment>,
    pub(super) lease_expires_at: Option<Moment>,
}

impl Keys {
    pub(super) fn read(keys: &codec::Keys) -> Keys {
        Keys {
            at: keys.created_at.into(),
            status: Some(keys.status),
            expires_at: keys.expires_at.map(Moment::from),
            lease_expires_at: keys.lease_expires_at.map(Moment::from),
        }
    }

    pub(super) fn of(task: &Task) -> Keys {
        Keys {
            at: task.created_at.into(),
            status: Some(task.status),
            expires_at: task.expires_at().map(Moment::from),
            lease_expires_at: task.lease_expires_at.map(Moment::from),
        }
    }

    /// The keys of a finished task whose `expiring/` entry says it was
    /// created at `at` and expires at `expires_at`: a terminal task holds
    /// no lease.
    pub(super) fn indexed(at: OffsetDateTime, expires_at: Option<OffsetDateTime>) -> Keys {
        Keys {
            at: at.into(),
            status: None,
            expires_at: expires_at.map(Moment::from),
            lease_expires_at: None,
        }
    }

    pub(super) fn matches(&self, scan: &Scan) -> bool {
        match self.status {
            Some(status) => scan.matches_keys(status, self.expires_at, self.lease_expires_at),
            // Some terminal status: it is what a scan that asks for none
            // asks of a finished task (a scan that asks for one learns the
            // status first: `learn_statuses`).
            None => {
                scan.status.is_none()
                    && scan.matches_keys(
                        TaskStatus::Completed,
                        self.expires_at,
                        self.lease_expires_at,
                    )
            }
        }
    }

    /// Whether `read`, the keys of the task read from its file, are these,
    /// as far as these know it.
    pub(super) fn fits(&self, read: &Keys) -> bool {
        match self.status {
            Some(_) => self == read,
            None => {
                *self
                    == Keys {
                        status: None,
                        ..*read
                    }
            }
        }
    }
}
