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
use std::ffi::{OsStr, OsString};
use std::ops::Bound;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use crate::backend::{Scan, Skipped, UnreadableAction};
use crate::error::Error;
use crate::file::codec::Keys;
use crate::file::moment::Moment;
use crate::file::places::Places;
use crate::file::stamp::Stamp;
use crate::file::watch::Watch;
use crate::id::TaskId;
use crate::task::{Task, TaskStatus};

/// The file bytes a snapshot keeps in all; past it, entries keep their keys
/// only and their files are read again when returned.
pub(crate) const MAX_CACHED_BYTES: usize = 64 << 20;

/// While the snapshot holds at most this many running tasks, it keeps each
/// one it returned decoded too, so a listing of a few running tasks (what a
/// server asks most often) copies them instead of decoding them again. The
/// decoded copies stay bounded: no entry gains one while more tasks run.
pub(crate) const MAX_DECODED: usize = 64;

/// Only a running task whose file's bytes the snapshot keeps, and at most
/// this many, is kept decoded: decoded, a task takes up to about 17 times
/// its file's bytes (a small number in an array, two bytes of JSON, is a
/// 32-byte value), so the copies of [`MAX_DECODED`] tasks stay under about
/// 18 MiB, however large the tasks are.
pub(crate) const MAX_DECODED_FILE: usize = 16 << 10;

/// Whether the task of `slot`'s entry is small enough to keep decoded
/// (see [`MAX_DECODED_FILE`]).
pub(crate) fn worth_decoding(slot: &Slot) -> bool {
    slot.bytes()
        .is_some_and(|bytes| bytes.len() <= MAX_DECODED_FILE)
}

/// One handle's snapshot, behind its lock.
#[derive(Debug)]
pub(crate) struct ActiveSnapshot {
    state: Mutex<State>,
    /// Whether to use change notices, of `active/` and of `done/`
    /// (`FileStoreBuilder::change_notices`; read by `FileBackend::watch`).
    pub watch: AtomicBool,
    /// Whether the kernel has refused this handle a watch (it says so once).
    pub watch_refused: AtomicBool,
}

impl Default for ActiveSnapshot {
    fn default() -> ActiveSnapshot {
        ActiveSnapshot {
            state: Mutex::default(),
            watch: AtomicBool::new(true),
            watch_refused: AtomicBool::new(false),
        }
    }
}

impl ActiveSnapshot {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole; a poisoned lock holds a
        // whole state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state, unless another thread holds it (a listing or a refresh
    /// may hold it across file reads).
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, State>> {
        match self.state.try_lock() {
            Ok(state) => Some(state),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }
}

/// The snapshot itself.
///
/// Memory is the point of its shape (a handle may hold many thousands of
/// running tasks): each task is one entry of one ordered map, whose key
/// holds the task's file bytes and finds its id inside them (an id needs no
/// escaping in JSON, so the file holds it verbatim), and a task's place is
/// found from its id through a map of id hashes, not a second copy of the
/// id. A file-status stamp is kept only where it is the proof, without a
/// watch. A full pass builds the map packed.
#[derive(Debug, Default)]
pub(crate) struct State {
    entries: BTreeMap<Slot, Entry>,
    /// Where each task is in `entries`, by its id.
    places: Places,
    /// The running tasks kept decoded too, by id (see [`MAX_DECODED`]):
    /// apart from `entries`, so that an entry pays nothing for them.
    decoded: HashMap<Box<[u8]>, Arc<Task>>,
    /// Files that could not be read: reported by every listing until they
    /// change or go.
    pub bad: BTreeMap<TaskId, Bad>,
    /// What the next listing reports once (files set aside, foreign names),
    /// one report per location: see [`report`](State::report).
    pub reported: Reports,
    /// Foreign names of `active/` left in place (the quarantine full, the
    /// move failed): reported by every listing while they are there, and
    /// tried again by each listing that no pass tried them before; see
    /// [`report_foreign`](State::report_foreign).
    pub left: BTreeMap<OsString, Left>,
    /// Non-terminal entries.
    active: usize,
    /// File bytes kept in `entries`.
    cached: usize,
    /// The change notices, live since the last full pass.
    pub watch: Option<Watch>,
    /// Names whose notices a sweep took to read the files itself (see
    /// `unread`), not read into the snapshot yet: every refresh reads them
    /// as changed names, and the sweep puts back what it leaves.
    pub unread: Option<crate::file::unread::Taken>,
    /// Whether the snapshot covers every change: a full pass was made and
    /// the watch (or, without one, `dir`) has held since.
    pub complete: bool,
    /// Without a watch: `active/`'s settled status before the last full pass.
    pub dir: Option<Stamp>,
    /// The first file the reads since a listing began could not read for
    /// want of descriptors or memory (`fs::is_short_of_resources`): the
    /// listing fails with it (the file stays marked unreadable, read
    /// again by the next listing).
    pub short_of: Option<Error>,
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
    /// Tasks decoded from kept bytes by listings (for the tests).
    #[cfg(test)]
    pub decodes: u64,
}

/// A task's place in listing order (creation time, then id), holding its
/// file's bytes, or its id alone once the snapshot's byte budget is spent.
///
/// It takes 32 bytes (`Moment`, a `u16` and two `u8`s beside the blob's
/// pointer and length), where the id's place as a `u32` and the bytes'
/// as an `Option<u8>` took 40.
#[derive(Debug)]
pub(crate) struct Slot {
    created_at: Moment,
    /// The file's bytes, which hold the id at `id_at`; or, for a file that
    /// spells its id otherwise (escaped) or past `u16::MAX` bytes in, the id
    /// followed by the bytes; or the id alone.
    blob: Box<[u8]>,
    id_at: u16,
    id_len: u8,
    holds: Holds,
}

/// What a [`Slot`]'s blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// The id alone (past the byte budget).
    Id,
    /// The file's bytes, with the id inside them.
    Bytes,
    /// The id, then the file's bytes.
    IdThenBytes,
}

impl Slot {
    /// The slot of task `id` created at `created_at`, keeping `bytes` if
    /// given.
    fn new(created_at: Moment, id: &TaskId, bytes: Option<Vec<u8>>) -> Slot {
        let id = id.as_str().as_bytes();
        let id_len = u8::try_from(id.len()).expect("ids are at most 128 bytes");
        let Some(bytes) = bytes else {
            return Slot {
                created_at,
                blob: id.into(),
                id_at: 0,
                id_len,
                holds: Holds::Id,
            };
        };
        let found = bytes
            .windows(id.len())
            .position(|w| w == id)
            .and_then(|at| u16::try_from(at).ok());
        match found {
            Some(id_at) => Slot {
                created_at,
                blob: bytes.into_boxed_slice(),
                id_at,
                id_len,
                holds: Holds::Bytes,
            },
            None => {
                let mut blob = Vec::with_capacity(id.len() + bytes.len());
                blob.extend_from_slice(id);
                blob.extend_from_slice(&bytes);
                Slot {
                    created_at,
                    blob: blob.into_boxed_slice(),
                    id_at: 0,
                    id_len,
                    holds: Holds::IdThenBytes,
                }
            }
        }
    }

    /// The id's bytes.
    fn id_bytes(&self) -> &[u8] {
        let at = usize::from(self.id_at);
        &self.blob[at..at + usize::from(self.id_len)]
    }

    /// The task's id (its bytes came from one, in [`Slot::new`]).
    pub fn id(&self) -> TaskId {
        TaskId::trusted(std::str::from_utf8(self.id_bytes()).expect("ids are ASCII"))
    }

    /// The task's creation time.
    pub fn created_at(&self) -> Moment {
        self.created_at
    }

    /// The file's bytes, if kept.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self.holds {
            Holds::Id => None,
            Holds::Bytes => Some(&self.blob),
            Holds::IdThenBytes => Some(&self.blob[usize::from(self.id_len)..]),
        }
    }

    /// The bytes kept of the file.
    fn cached(&self) -> usize {
        self.bytes().map_or(0, <[u8]>::len)
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.created_at == other.created_at && self.id_bytes() == other.id_bytes()
    }
}

impl Eq for Slot {}

impl PartialOrd for Slot {
    fn partial_cmp(&self, other: &Slot) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// [`Position`](crate::backend::Position)'s order: creation time, then id (compared as bytes, as
/// `TaskId`'s `str` compares).
impl Ord for Slot {
    fn cmp(&self, other: &Slot) -> std::cmp::Ordering {
        self.created_at
            .cmp(&other.created_at)
            .then_with(|| self.id_bytes().cmp(other.id_bytes()))
    }
}

/// An entry [`State::stage`] made ready, for [`State::put_all`].
#[derive(Debug)]
pub(crate) struct Staged((Slot, Entry));

/// A task file's listing keys, as the snapshot keeps them: 48 bytes.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub status: TaskStatus,
    pub revision: u64,
    pub expires_at: Option<Moment>,
    pub lease_expires_at: Option<Moment>,
    /// The file's status, if settled when read, and only without a watch
    /// (where it is the proof that the entry is current): boxed, a 64-byte
    /// block, so that an entry with a watch pays a pointer for it.
    stamp: Option<Box<Stamp>>,
}

impl Entry {
    /// The file's status when read, if kept.
    pub fn stamp(&self) -> Option<Stamp> {
        self.stamp.as_deref().copied()
    }
}

/// An unreadable file, and whether setting it aside was tried yet.
#[derive(Debug, Clone)]
pub(crate) struct Bad {
    pub report: Skipped,
    pub stamp: Option<Stamp>,
    pub tried: bool,
    /// Whether it failed to read for a reason that may pass (an I/O
    /// error): read again by every listing, not only once it changes.
    pub retry: bool,
}

/// A foreign name of `active/` left in place: its last report.
#[derive(Debug)]
pub(crate) struct Left {
    pub report: Skipped,
    /// Whether a pass tried to set it aside since the last listing.
    pub tried: bool,
}

/// Reports for the next listing, one per location, in the order they came
/// (a later one of a location replaces the earlier): each kept in O(1).
#[derive(Debug, Default)]
pub(crate) struct Reports {
    list: Vec<Skipped>,
    at: HashMap<String, usize>,
}

impl Reports {
    fn put(&mut self, report: Skipped) {
        match self.at.get(&report.location) {
            Some(&at) => self.list[at] = report,
            None => {
                self.at.insert(report.location.clone(), self.list.len());
                self.list.push(report);
            }
        }
    }

    /// Every report, in the order they came; none kept.
    pub fn take(&mut self) -> Vec<Skipped> {
        self.at.clear();
        std::mem::take(&mut self.list)
    }
}

impl State {
    /// Keeps what became of the foreign name `name` of `active/`: set
    /// aside, reported once by the next listing; left in place, reported
    /// by every listing until it is set aside or gone (no change notice
    /// names it again, so it is kept here, not in `reported`).
    pub fn report_foreign(&mut self, name: OsString, report: Skipped) {
        if report.action == UnreadableAction::LeftInPlace {
            self.left.insert(
                name,
                Left {
                    report,
                    tried: true,
                },
            );
        } else {
            self.left.remove(&name);
            self.report(report);
        }
    }

    /// Forgets the foreign name `name` of `active/`: it is gone.
    pub fn forget_foreign(&mut self, name: &OsStr) {
        self.left.remove(name);
    }

    /// Keeps `report` for the next listing, unless one of the same
    /// location waits already (then the newer one replaces it): passes
    /// over `active/` between two listings (without change notices, every
    /// create after a change makes one) meet a name left in place again
    /// and again, and the listing reports it once.
    pub fn report(&mut self, report: Skipped) {
        self.reported.put(report);
    }

    /// How many bytes of files the snapshot could keep if the entries of
    /// `ids` were put in again: the budget left, and what they keep now.
    pub fn room_for(&self, ids: impl Iterator<Item = TaskId>) -> usize {
        let left = MAX_CACHED_BYTES.saturating_sub(self.cached);
        if self.cached == 0 {
            return left;
        }
        let theirs: usize = ids
            .filter_map(|id| self.get(&id).map(|(slot, _)| slot.cached()))
            .sum();
        left + theirs
    }

    /// The entry of task `id`, with its slot.
    pub fn get(&self, id: &TaskId) -> Option<(&Slot, &Entry)> {
        let created_at = self.places.get(id)?;
        self.entries.get_key_value(&Slot::new(created_at, id, None))
    }

    /// Puts task `id`'s entry in, replacing any other; its file's `bytes`
    /// are kept if given and within the byte budget.
    pub fn put(&mut self, id: &TaskId, keys: &Keys, bytes: Option<Vec<u8>>, stamp: Option<Stamp>) {
        let (slot, entry) = self.prepare(id, keys, bytes, stamp);
        self.entries.insert(slot, entry);
    }

    /// Task `id`'s entry, made ready for [`put_all`](Self::put_all): every
    /// count and index is revised already, the map is not. A full pass
    /// stages each task it reads and then puts them all in at once, so that
    /// the map is built packed (entries put one at a time leave its nodes
    /// about two thirds full).
    pub fn stage(
        &mut self,
        id: &TaskId,
        keys: &Keys,
        bytes: Option<Vec<u8>>,
        stamp: Option<Stamp>,
    ) -> Staged {
        Staged(self.prepare(id, keys, bytes, stamp))
    }

    /// Puts the entries staged since the map last changed in.
    pub fn put_all(&mut self, staged: Vec<Staged>) {
        // A vector's iterator, sorted, builds the map from the bottom up
        // (`FromIterator` and `append` both fill each node whole).
        let mut fresh: BTreeMap<Slot, Entry> = staged.into_iter().map(|s| s.0).collect();
        if self.entries.is_empty() {
            self.entries = fresh;
        } else {
            self.entries.append(&mut fresh);
        }
    }

    /// Task `id`'s slot and entry, with every count and index but the map
    /// itself already revised: the caller puts them in.
    fn prepare(
        &mut self,
        id: &TaskId,
        keys: &Keys,
        bytes: Option<Vec<u8>>,
        stamp: Option<Stamp>,
    ) -> (Slot, Entry) {
        self.remove(id);
        self.bad.remove(id);
        let bytes = bytes.filter(|bytes| self.cached + bytes.len() <= MAX_CACHED_BYTES);
        if let Some(bytes) = &bytes {
            self.cached += bytes.len();
        }
        if !keys.status.is_terminal() {
            self.active += 1;
        }
        let created_at = Moment::from(keys.created_at);
        self.places.insert(id, created_at);
        let slot = Slot::new(created_at, id, bytes);
        let stamp = stamp.filter(|_| self.watch.is_none());
        let entry = Entry {
            status: keys.status,
            revision: keys.revision,
            expires_at: keys.expires_at.map(Moment::from),
            lease_expires_at: keys.lease_expires_at.map(Moment::from),
            stamp: stamp.map(Box::new),
        };
        (slot, entry)
    }

    /// Takes task `id`'s entry out.
    pub fn remove(&mut self, id: &TaskId) {
        let entries = &self.entries;
        let Some(created_at) = self
            .places
            .remove(id, |at| entries.contains_key(&Slot::new(at, id, None)))
        else {
            return;
        };
        if let Some((slot, entry)) = self.entries.remove_entry(&Slot::new(created_at, id, None)) {
            if !entry.status.is_terminal() {
                self.active -= 1;
            }
            self.cached -= slot.cached();
        }
        if !self.decoded.is_empty() {
            self.decoded.remove(id.as_str().as_bytes());
        }
    }

    /// The task of `slot`'s entry, if kept decoded. It is that entry's
    /// version: a copy is kept only of the version the entry holds
    /// ([`keep_decoded`](Self::keep_decoded)), and goes with the entry
    /// ([`remove`](Self::remove), which every put makes first).
    pub fn decoded(&self, slot: &Slot) -> Option<&Arc<Task>> {
        if self.decoded.is_empty() {
            return None;
        }
        self.decoded.get(slot.id_bytes())
    }

    /// Keeps `task`, decoded from its entry (created at `created_at`),
    /// beside it, if the snapshot holds few enough running tasks, the
    /// entry is still the version decoded, and its file is small
    /// ([`worth_decoding`]).
    pub fn keep_decoded(&mut self, created_at: Moment, task: &Arc<Task>) {
        if self.active > MAX_DECODED {
            return;
        }
        let current = self
            .entries
            .get_key_value(&Slot::new(created_at, &task.id, None))
            .is_some_and(|(slot, e)| e.revision == task.revision && worth_decoding(slot));
        if current {
            let id: Box<[u8]> = task.id.as_str().as_bytes().into();
            self.decoded.insert(id, Arc::clone(task));
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
                retry: false,
            },
        );
    }

    /// Every id the snapshot knows, readable or not.
    pub fn ids(&self) -> impl Iterator<Item = TaskId> {
        self.entries
            .keys()
            .map(Slot::id)
            .chain(self.bad.keys().cloned())
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
    pub fn select<'a>(&'a self, scan: &'a Scan) -> impl Iterator<Item = (&'a Slot, &'a Entry)> {
        let from = match &scan.after {
            Some(after) => Bound::Excluded(Slot::new(after.created_at.into(), &after.id, None)),
            None => Bound::Unbounded,
        };
        let matches = scan.keys_matcher::<Moment>();
        self.entries
            .range((from, Bound::Unbounded))
            .filter(move |(_, e)| matches(e.status, e.expires_at, e.lease_expires_at))
    }

    /// The terminal tasks still in `active/` (interrupted moves).
    pub fn unmoved(&self) -> Vec<TaskId> {
        self.entries
            .iter()
            .filter(|(_, e)| e.status.is_terminal())
            .map(|(slot, _)| slot.id())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use time::OffsetDateTime;

    use super::{MAX_CACHED_BYTES, State};
    use crate::backend::{Position, Scan, Scope};
    use crate::file::codec::Keys;
    use crate::file::moment::Moment;
    use crate::file::places::Places;
    use crate::id::TaskId;
    use crate::task::{NewTask, TaskStatus};

    fn keys(created: i64, revision: u64) -> Keys {
        Keys {
            // Many tasks share a creation time: the id orders them.
            created_at: OffsetDateTime::from_unix_timestamp(created).unwrap(),
            status: TaskStatus::Working,
            revision,
            expires_at: None,
            lease_expires_at: None,
        }
    }

    fn moment(created: i64) -> Moment {
        OffsetDateTime::from_unix_timestamp(created).unwrap().into()
    }

    /// The file bytes of task `id` (as the codec writes them, the id
    /// verbatim; or with its first letter escaped).
    fn file(id: &TaskId, escaped: bool) -> Vec<u8> {
        let id = id.as_str();
        let spelled = if escaped {
            format!("\\u{:04x}{}", u32::from(id.as_bytes()[0]), &id[1..])
        } else {
            id.to_owned()
        };
        format!("{{\"format\":1,\"task\":{{\"taskId\":\"{spelled}\"}}}}").into_bytes()
    }

    /// Puts, replaces and removes tasks in a random order, checking every
    /// lookup, the listing order and the counts against a plain map: with
    /// real hashes, and with every id hashing alike.
    #[test]
    fn the_snapshot_finds_orders_and_counts_like_a_plain_map() {
        for collide in [false, true] {
            let mut state = State {
                places: Places::colliding(collide),
                ..State::default()
            };
            let mut model: BTreeMap<TaskId, (i64, u64, Vec<u8>)> = BTreeMap::new();
            let ids: Vec<TaskId> = (0..40)
                .map(|i| TaskId::parse(&format!("t{:02}", (i * 17) % 40)).unwrap())
                .collect();
            let mut next = crate::file::places::pseudo_random(7);
            for step in 0..2_000u64 {
                let id = &ids[next(40) as usize];
                match next(4) {
                    0 => {
                        state.remove(id);
                        model.remove(id);
                    }
                    _ => {
                        let created = next(5) as i64;
                        let bytes = file(id, next(3) == 0);
                        state.put(id, &keys(created, step), Some(bytes.clone()), None);
                        model.insert(id.clone(), (created, step, bytes));
                        if next(2) == 0 {
                            // A listing decoded it: kept beside its entry.
                            let mut task =
                                NewTask::new().into_task(id.clone(), OffsetDateTime::UNIX_EPOCH);
                            task.revision = step;
                            state.keep_decoded(moment(created), &Arc::new(task));
                        }
                    }
                }
                if step % 50 == 0 {
                    // A full pass's batch, over what is there.
                    let batch: Vec<_> = model
                        .iter()
                        .filter(|_| next(2) == 0)
                        .map(|(id, (created, revision, bytes))| {
                            state.stage(id, &keys(*created, *revision), Some(bytes.clone()), None)
                        })
                        .collect();
                    state.put_all(batch);
                }
                for id in &ids {
                    let found = state.get(id).map(|(slot, entry)| {
                        (
                            slot.created_at(),
                            entry.revision,
                            slot.bytes().unwrap().to_vec(),
                        )
                    });
                    let expected = model.get(id).map(|(created, revision, bytes)| {
                        (moment(*created), *revision, bytes.clone())
                    });
                    assert_eq!(found, expected, "{id} at step {step}");
                }
                // A decoded copy is kept only beside its entry's version,
                // and goes with it.
                for (id, task) in &state.decoded {
                    let id = TaskId::parse(std::str::from_utf8(id).unwrap()).unwrap();
                    assert_eq!(model.get(&id).map(|m| m.1), Some(task.revision), "{id}");
                    let (slot, entry) = state.get(&id).unwrap();
                    assert_eq!(entry.revision, task.revision, "{id}");
                    assert!(state.decoded(slot).is_some(), "{id}");
                }
                assert_eq!(state.active(), model.len());
                let bytes: usize = model.values().map(|(.., b)| b.len()).sum();
                assert_eq!(state.size(), (bytes, model.len()));
            }
            let mut order: Vec<Position> = model
                .iter()
                .map(|(id, (created, ..))| Position {
                    created_at: OffsetDateTime::from_unix_timestamp(*created).unwrap(),
                    id: id.clone(),
                })
                .collect();
            order.sort();
            let scan = Scan::new(Scope::Active, usize::MAX);
            let listed: Vec<TaskId> = state.select(&scan).map(|(slot, _)| slot.id()).collect();
            let expected: Vec<TaskId> = order.iter().map(|p| p.id.clone()).collect();
            assert_eq!(listed, expected);
            let after = Scan {
                after: Some(order[order.len() / 2].clone()),
                ..Scan::new(Scope::Active, usize::MAX)
            };
            let rest: Vec<TaskId> = state.select(&after).map(|(slot, _)| slot.id()).collect();
            assert_eq!(rest, expected[order.len() / 2 + 1..]);
            let mut known: Vec<TaskId> = state.ids().collect();
            known.sort();
            assert_eq!(known, model.keys().cloned().collect::<Vec<_>>());
        }
    }

    /// The sizes the snapshot's memory is reckoned with (a slot and an
    /// entry per task in the ordered map; BENCHMARKS.md's memory rows).
    #[test]
    fn a_slot_takes_32_bytes_and_an_entry_48() {
        assert_eq!(size_of::<super::Slot>(), 32);
        assert_eq!(size_of::<super::Entry>(), 48);
    }

    /// A file whose id is first written more than `u16::MAX` bytes in (a
    /// hand-made file, say) is kept whole, with its id before it, and found.
    #[test]
    fn an_id_far_into_its_file_is_kept_before_the_bytes() {
        let mut state = State::default();
        let far = TaskId::parse("far").unwrap();
        let mut bytes = vec![b' '; 70_000];
        bytes.extend(file(&far, false));
        state.put(&far, &keys(1, 1), Some(bytes.clone()), None);
        let (slot, _) = state.get(&far).unwrap();
        assert_eq!(slot.id(), far);
        assert_eq!(slot.bytes(), Some(&bytes[..]));
        assert_eq!(state.size(), (bytes.len(), 1));
    }

    /// Past the byte budget an entry keeps its id alone, and is still found.
    #[test]
    fn past_the_byte_budget_an_entry_keeps_its_id_alone() {
        let mut state = State::default();
        let big = TaskId::parse("big").unwrap();
        let mut bytes = file(&big, false);
        bytes.resize(MAX_CACHED_BYTES, b' ');
        state.put(&big, &keys(1, 1), Some(bytes), None);
        let small = TaskId::parse("small").unwrap();
        state.put(&small, &keys(2, 1), Some(file(&small, false)), None);
        let (slot, _) = state.get(&small).unwrap();
        assert_eq!(slot.bytes(), None);
        assert_eq!(slot.id(), small);
        assert_eq!(state.size(), (MAX_CACHED_BYTES, 2));
        state.remove(&big);
        assert_eq!(state.size(), (0, 1));
    }
}
