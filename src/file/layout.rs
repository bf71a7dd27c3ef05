//! Where things live inside a store directory (see FORMAT.md).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::id::TaskId;

/// The store's format version, written in the marker file and every task file.
pub(crate) const FORMAT_VERSION: u64 = 1;
/// The marker file at the store's root.
pub(crate) const MARKER: &str = "taskstore.json";
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
}

/// The paths of one store directory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub root: PathBuf,
    pub active: PathBuf,
    pub done: PathBuf,
    pub tmp: PathBuf,
    pub quarantine: PathBuf,
    pub locks: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
            active: root.join("active"),
            done: root.join("done"),
            tmp: root.join("tmp"),
            quarantine: root.join("quarantine"),
            locks: root.join("locks"),
        }
    }

    pub fn dirs(&self) -> [&Path; 5] {
        [
            &self.active,
            &self.done,
            &self.tmp,
            &self.quarantine,
            &self.locks,
        ]
    }

    pub fn area(&self, area: Area) -> &Path {
        match area {
            Area::Active => &self.active,
            Area::Done => &self.done,
        }
    }

    pub fn task(&self, area: Area, id: &TaskId) -> PathBuf {
        let mut name = String::with_capacity(id.as_str().len() + TASK_SUFFIX.len());
        name.push_str(id.as_str());
        name.push_str(TASK_SUFFIX);
        self.area(area).join(name)
    }

    /// A fresh temp-file name for a write of task `id`: `<id>.<pid>.<seq>.tmp`.
    /// Unique among live writers on the host; a collision with a dead writer's
    /// leftover is caught by `create_new` and retried by the caller.
    pub fn temp(&self, id: &TaskId) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        self.tmp
            .join(format!("{id}.{}.{seq}{TEMP_SUFFIX}", std::process::id()))
    }

    pub fn lock_file(&self, stripe: usize) -> PathBuf {
        self.locks.join(format!("{stripe:02}.lock"))
    }

    pub fn marker(&self) -> PathBuf {
        self.root.join(MARKER)
    }
}

/// The task id of a task file name (`<id>.json`), or `None` for a foreign name.
pub(crate) fn task_file_id(name: &OsStr) -> Option<TaskId> {
    let id = name.to_str()?.strip_suffix(TASK_SUFFIX)?;
    TaskId::parse(id).ok()
}

/// The task id a temp file was written for, or `None` for a foreign name.
pub(crate) fn temp_file_id(name: &OsStr) -> Option<TaskId> {
    let stem = name.to_str()?.strip_suffix(TEMP_SUFFIX)?;
    let mut parts = stem.rsplitn(3, '.');
    let _seq: u64 = parts.next()?.parse().ok()?;
    let _pid: u32 = parts.next()?.parse().ok()?;
    TaskId::parse(parts.next()?).ok()
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
        let layout = Layout::new(Path::new("/s"));
        let id = TaskId::parse("a.b-c_1").unwrap();
        let task = layout.task(Area::Done, &id);
        assert_eq!(task, Path::new("/s/done/a.b-c_1.json"));
        assert_eq!(task_file_id(task.file_name().unwrap()), Some(id.clone()));
        let temp = layout.temp(&id);
        assert_eq!(temp_file_id(temp.file_name().unwrap()), Some(id));
        assert_eq!(task_file_id(OsStr::new(".x.json")), None);
        assert_eq!(task_file_id(OsStr::new("x.txt")), None);
        assert_eq!(temp_file_id(OsStr::new("x.1.tmp")), None);
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
