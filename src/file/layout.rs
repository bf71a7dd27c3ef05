//! Where things live inside a store directory (see FORMAT.md).

use std::ffi::{OsStr, OsString};
#[cfg(feature = "mcp")]
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::Position;
use crate::id::TaskId;
use crate::task::{Task, expiry};

/// The store's format version, written in its marker: the layout and the
/// protocol (FORMAT.md). Version 2 added `expiring/`.
pub(crate) const STORE_FORMAT: u64 = 2;
/// The task-file format version, written in every task file's envelope.
pub(crate) const TASK_FORMAT: u64 = 1;
/// The marker file at the store's root.
pub(crate) const MARKER: &str = "taskstore.json";
/// The lock every handle holds shared for its life, in `locks/`.
pub(crate) const HANDLES_LOCK: &str = "handles.lock";
/// The lock a batch that leaves its tasks between two states holds shared,
/// and a check takes exclusive to judge settled state, in `locks/`.
pub(crate) const BATCHES_LOCK: &str = "batches.lock";
/// How many lock files the task ids are striped over.
pub(crate) const STRIPES: usize = 64;

const TASK_SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";

/// One of the two task areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Area {
    /// Non-terminal tasks: everything `open` and "list active" ever read.
    Active,
    /// Terminal tasks: history.
    Done,
}

impl Area {
    pub fn name(self) -> &'static str {
        match self {
            Area::Active => "active",
            Area::Done => "done",
        }
    }

    /// Where a task lives: running tasks in `active/`, finished ones in `done/`.
    pub fn of(task: &crate::task::Task) -> Area {
        if task.is_terminal() {
            Area::Done
        } else {
            Area::Active
        }
    }
}

/// The directories of a store, by name, in the order they are made:
/// `expiring/` before `done/`, so that a store half made by another open
/// is never one with `done/` and without `expiring/`, which is how a store
/// of format 1 that lost its marker is known; and `locks/` and `tmp/`
/// before `expiring/`, which the marker written for such a store needs.
pub(crate) const DIRS: [&str; 6] = ["active", "tmp", "quarantine", "locks", INDEX_DIR, "done"];

/// The expiry index's directory: what format 2 added to format 1, so a
/// store without a marker that has `done/` and not this is of format 1.
pub(crate) const INDEX_DIR: &str = "expiring";

/// Names a store's root may hold that are not the store's own and harm
/// nothing: a fresh file system's `lost+found`.
const HARMLESS: &[&str] = &["lost+found"];

/// What a name at a store's root is to the store: the one rule that
/// opening (which directories may become a store), `verify` (which
/// entries are foreign) and repair (which entries are the store's
/// directories) follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootName {
    /// The marker, [`MARKER`].
    Marker,
    /// One of the store's directories, [`DIRS`].
    Dir,
    /// Not the store's, and harmless there.
    Harmless,
    /// Anything else.
    Foreign,
}

impl RootName {
    /// What `name` at a store's root is.
    pub(crate) fn of(name: &OsStr) -> RootName {
        if name == MARKER {
            RootName::Marker
        } else if DIRS.iter().any(|d| name == *d) {
            RootName::Dir
        } else if HARMLESS.iter().any(|h| name == *h) {
            RootName::Harmless
        } else {
            RootName::Foreign
        }
    }
}

/// The name in `expiring/` of a finished task with a TTL (a hard link to
/// its file in `done/`): `<createdAt, unix nanos>.<ttl ms>.<id>`, so that
/// the sweep knows when it expires and where it lists without reading it.
pub(crate) fn expiring_name(task: &Task) -> Option<OsString> {
    let ttl = task.ttl?;
    Some(
        format!(
            "{}.{}.{}",
            task.created_at.unix_timestamp_nanos(),
            ttl.as_millis(),
            task.id
        )
        .into(),
    )
}

/// Whether the `expiring/` entry `entry` is the one of `task` (its id,
/// creation time and TTL): the entry of that very incarnation, whatever
/// file it is.
pub(crate) fn is_entry_of(entry: &OsStr, task: &Task) -> bool {
    expiring_name(task).as_deref() == Some(entry)
}

/// What an `expiring/` entry names: the task's position and when it
/// expires; `None` for a foreign name.
pub(crate) fn expiring_entry(name: &OsStr) -> Option<(Position, Option<time::OffsetDateTime>)> {
    let (created_at, expires_at, id) = expiring_parts(name)?;
    let id = TaskId::parse(id).ok()?;
    Some((Position { created_at, id }, expires_at))
}

/// Whether an `expiring/` entry whose name says its task expires at
/// `expires_at` is due at `at`: what a sweep at `at` reads of the index.
pub(crate) fn is_due(expires_at: Option<time::OffsetDateTime>, at: time::OffsetDateTime) -> bool {
    expires_at.is_some_and(|x| x <= at)
}

/// What an `expiring/` entry names, if it names task `id`: when the task
/// was created and when it expires (without making an id of the name).
pub(crate) fn expiring_entry_of(
    name: &OsStr,
    id: &TaskId,
) -> Option<(time::OffsetDateTime, Option<time::OffsetDateTime>)> {
    let (created_at, expires_at, named) = expiring_parts(name)?;
    (named == id.as_str()).then_some((created_at, expires_at))
}

/// The parts of an `expiring/` entry's name: creation time, expiry and
/// the id as written.
fn expiring_parts(
    name: &OsStr,
) -> Option<(time::OffsetDateTime, Option<time::OffsetDateTime>, &str)> {
    let mut parts = name.to_str()?.splitn(3, '.');
    let created: i128 = parts.next()?.parse().ok()?;
    let ttl: u64 = parts.next()?.parse().ok()?;
    let id = parts.next()?;
    let created_at = time::OffsetDateTime::from_unix_timestamp_nanos(created).ok()?;
    let expires_at = expiry(created_at, Some(std::time::Duration::from_millis(ttl)));
    Some((created_at, expires_at, id))
}

/// The file name of task `id`'s file: `<id>.json`.
pub(crate) fn task_name(id: &TaskId) -> OsString {
    let mut name = String::with_capacity(id.as_str().len() + TASK_SUFFIX.len());
    name.push_str(id.as_str());
    name.push_str(TASK_SUFFIX);
    name.into()
}

/// Whether `path` names task `id`'s own file, in whichever area (as an
/// error of a read of it names it): the MCP binding's test of whose a
/// failure is.
#[cfg(feature = "mcp")]
pub(crate) fn is_task_file(path: &Path, id: &TaskId) -> bool {
    path.file_name() == Some(task_name(id).as_os_str())
}

/// A fresh temp-file name for a write of task `id`: `<id>.<pid>.<seq>.tmp`.
/// Unique among live writers on the host; a collision with a dead writer's
/// leftover is caught by `create_new` and retried by the caller.
pub(crate) fn temp_name(id: &TaskId) -> OsString {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{id}.{}.{seq}{TEMP_SUFFIX}", std::process::id()).into()
}

/// The file name of lock stripe `stripe`.
pub(crate) fn lock_name(stripe: usize) -> OsString {
    format!("{stripe:02}.lock").into()
}

/// The task id of a task file name (`<id>.json`), or `None` for a foreign name.
pub(crate) fn task_file_id(name: &OsStr) -> Option<TaskId> {
    let id = name.to_str()?.strip_suffix(TASK_SUFFIX)?;
    TaskId::parse(id).ok()
}

/// The task id a temp file was written for and the process id of its
/// writer, or `None` for a foreign name.
pub(crate) fn temp_file_writer(name: &OsStr) -> Option<(TaskId, u32)> {
    let stem = name.to_str()?.strip_suffix(TEMP_SUFFIX)?;
    let mut parts = stem.rsplitn(3, '.');
    let _seq: u64 = parts.next()?.parse().ok()?;
    let pid: u32 = parts.next()?.parse().ok()?;
    Some((TaskId::parse(parts.next()?).ok()?, pid))
}

/// The lock stripe of a task id: FNV-1a (64-bit) of its bytes, modulo
/// [`STRIPES`]. Part of the on-disk format: every process must agree on it.
pub(crate) fn stripe(id: &TaskId) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_str().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % STRIPES as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let id = TaskId::parse("a.b-c_1").unwrap();
        let task = task_name(&id);
        assert_eq!(task, OsStr::new("a.b-c_1.json"));
        assert_eq!(task_file_id(&task), Some(id.clone()));
        let temp = temp_name(&id);
        assert_eq!(temp_file_writer(&temp), Some((id, std::process::id())));
        assert_eq!(task_file_id(OsStr::new(".x.json")), None);
        assert_eq!(task_file_id(OsStr::new("x.txt")), None);
        assert_eq!(temp_file_writer(OsStr::new("x.1.tmp")), None);
    }

    #[test]
    fn stripes_are_stable() {
        // FORMAT.md fixes this function; these values must never change.
        assert_eq!(
            stripe(&TaskId::parse("a").unwrap()),
            0xaf63dc4c8601ec8c % 64
        );
        assert_eq!(
            stripe(&TaskId::parse("task-1").unwrap()),
            stripe(&TaskId::parse("task-1").unwrap())
        );
    }
}
