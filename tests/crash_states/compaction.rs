//! Directory compaction on open under the crash model: an open alone
//! compacts an `active/` or an `expiring/` that grew large and emptied out
//! into a new directory, swaps the two (`RENAME_EXCHANGE`) and removes the
//! old one.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use taskstore::{Durability, Error, FileStore, FsEvent, ListQuery, NewTask, Task, TaskStore};

use crate::crash_states_from;
use crate::reopen::{Broken, every_state, nothing};
use crate::workload::{self, STORE};

/// A store whose `active/` grew to 6,000 running tasks and kept one is
/// opened alone, which compacts `active/`, and a task is created: in every
/// crash state from the open's first call on the store opens and the kept
/// task reads back, and from the create's answer on the new task too,
/// each listed among the running tasks. (Where directories shrink by
/// themselves, under 64 KiB grown, nothing is compacted and the test says
/// so.)
#[test]
fn a_compaction_on_open_keeps_every_task_in_every_crash_state() {
    // On the disk's file system, not tmpfs: its directories never shrink.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(STORE);
    let Some(kept) = grown_and_emptied(&root, None) else {
        eprintln!("this file system shrinks directories: nothing to compact");
        return;
    };
    let mut events = durable_events(dir.path());
    let from = events.len() + 1;
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let opened = recorder.len();
    let made = store.create(NewTask::new()).unwrap();
    drop(store);
    let recorded = recorder.events();
    assert!(
        recorded[..opened]
            .iter()
            .any(|e| matches!(e, FsEvent::Exchange { .. })),
        "the open compacted active/"
    );
    // The state at the create's answer: after its last call.
    let made_from = from + recorded.len() - 1;
    events.extend(recorded);
    let scratch = workload::scratch_dir("taskstore-compaction-states");
    let mut broken = Broken::default();
    for (start, tasks) in [(from, vec![&kept]), (made_from, vec![&kept, &made])] {
        let at = scratch.path().join(start.to_string());
        let states = crash_states_from(dir.path(), &events, start, &at);
        broken.add(every_state(states, open_immediate, nothing, |store| {
            let running = store.list(&ListQuery::active()).map(|l| l.tasks);
            let mut lines = Vec::new();
            for task in &tasks {
                match store.get(&task.id) {
                    Ok(Some(got)) if &&got == task => {}
                    got => lines.push(format!("{}: {got:?}", task.id)),
                }
                if !running.as_ref().is_ok_and(|r| r.contains(task)) {
                    lines.push(format!("{} not listed: {running:?}", task.id));
                }
            }
            lines
        }));
    }
    eprintln!("compaction on open: {} crash states", broken.states);
    broken.assert_none("compaction on open");
}

/// A store opened under `Durability::Immediate` at `root`.
fn open_immediate(root: &Path) -> Result<FileStore, Error> {
    FileStore::builder(root)
        .durability(Durability::Immediate)
        .open()
}

/// A store whose tasks with a TTL grew `expiring/` and `active/` to 2,000
/// entries and kept one, finished, is opened alone, which compacts both,
/// and a task with a TTL is created and completed through the new handle.
/// In every crash state from the open's first call on the store opens, the
/// kept task reads back finished, is not listed running, and keeps its
/// `expiring/` entry (without it no sweep would find it). Under
/// `Immediate` the new task reads back as created or completed from the
/// create's answer on, and completed with its entry from the complete's
/// answer on; under `Eventual` it may be lost, as documented, but reads
/// back as one of its acknowledged versions if at all.
#[test]
fn a_compaction_of_expiring_on_open_keeps_every_task_and_its_entry_in_every_crash_state() {
    for durability in [Durability::Immediate, Durability::Eventual] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join(STORE);
        let ttl = Duration::from_secs(86_400);
        let Some(kept) = grown_and_emptied(&root, Some(ttl)) else {
            eprintln!("this file system shrinks directories: nothing to compact");
            return;
        };
        let mut events = durable_events(dir.path());
        let from = events.len() + 1;
        let recorder = taskstore::Recorder::new();
        let store = FileStore::builder(&root)
            .durability(durability)
            .recorder(recorder.clone())
            .open()
            .unwrap();
        let opened = recorder.len();
        let made = store.create(NewTask::new().ttl(ttl)).unwrap();
        let created = recorder.len();
        let done = store
            .complete(&made.id, serde_json::json!("made"))
            .unwrap()
            .into_task();
        drop(store);
        let recorded = recorder.events();
        let swapped: Vec<&Path> = recorded[..opened]
            .iter()
            .filter_map(|e| match e {
                FsEvent::Exchange { a, .. } => Some(a.as_path()),
                _ => None,
            })
            .collect();
        assert!(
            ["active", "expiring"]
                .iter()
                .all(|a| swapped.iter().any(|p| p.ends_with(a))),
            "the open compacted active/ and expiring/: {swapped:?}"
        );
        // (phase's first call, the kept task's checks, the new task's
        // versions a state may hold, whether the new task needs its entry)
        let versions = vec![None, Some(made.clone()), Some(done.clone())];
        let phases = match durability {
            Durability::Immediate => vec![
                (from, None, false),
                (
                    from + created - 1,
                    Some(vec![Some(made.clone()), Some(done.clone())]),
                    false,
                ),
                (
                    from + recorded.len() - 1,
                    Some(vec![Some(done.clone())]),
                    true,
                ),
            ],
            _ => vec![(from, Some(versions), false)],
        };
        events.extend(recorded);
        let scratch = workload::scratch_dir("taskstore-compaction-expiring-states");
        let mut broken = Broken::default();
        for (start, allowed, entry) in phases {
            let at = scratch.path().join(start.to_string());
            let states = crate::crash_states_from(dir.path(), &events, start, &at);
            // Before any read: a listing of history gives a missing entry
            // back.
            let entries = |root: &Path| {
                let has_entry = |task: &Task| {
                    std::fs::read_dir(root.join("expiring")).unwrap().any(|e| {
                        let name = e.unwrap().file_name();
                        name.to_string_lossy().ends_with(&format!(".{}", task.id))
                    })
                };
                let mut lines = Vec::new();
                if !has_entry(&kept) {
                    lines.push(format!("kept {} without its expiring/ entry", kept.id));
                }
                if entry && !has_entry(&done) {
                    lines.push(format!("made {} without its expiring/ entry", done.id));
                }
                lines
            };
            let reads = |store: &FileStore| {
                let mut lines = Vec::new();
                match store.get(&kept.id) {
                    Ok(Some(got)) if got == kept => {}
                    got => lines.push(format!("kept {}: {got:?}", kept.id)),
                }
                if let Some(allowed) = &allowed {
                    match store.get(&made.id) {
                        Ok(got) if allowed.contains(&got) => {}
                        // `Eventual`: a file written lately may come back
                        // damaged, and is reported as such.
                        Err(Error::Corrupt { .. }) if durability == Durability::Eventual => {}
                        got => lines.push(format!("made {}: {got:?}", made.id)),
                    }
                }
                match store.list(&ListQuery::active()).map(|l| l.tasks) {
                    Ok(running) if running.iter().all(|t| !t.is_terminal() && t.id != kept.id) => {}
                    running => lines.push(format!("listed running: {running:?}")),
                }
                lines
            };
            broken.add(every_state(states, open_immediate, entries, reads));
        }
        let what = format!("compaction of expiring/ on open ({durability:?})");
        eprintln!("{what}: {} crash states", broken.states);
        broken.assert_none(&what);
    }
}

/// A store at `root` whose `active/` (and, with a `ttl`, `expiring/`) grew
/// to 6,000 tasks (2,000 with a `ttl`) and then kept only the last one (made through a handle
/// gone since; with a `ttl` every one finished first, so `expiring/` grew
/// and `active/` emptied, and the kept one is in `done/` with its
/// `expiring/` entry): that task; `None` where directories shrink by
/// themselves (under 64 KiB grown).
fn grown_and_emptied(root: &Path, ttl: Option<Duration>) -> Option<Task> {
    // `expiring/`'s names are longer: 2,000 grow it past 64 KiB.
    let count = if ttl.is_some() { 2_000 } else { 6_000 };
    let store = FileStore::builder(root)
        .durability(Durability::Eventual)
        .max_active(100_000)
        .open()
        .unwrap();
    let new = || match ttl {
        Some(ttl) => NewTask::new().ttl(ttl),
        None => NewTask::new(),
    };
    let mut tasks: Vec<Task> = (0..count).map(|_| store.create(new()).unwrap()).collect();
    if ttl.is_some() {
        // Only a finished task has an `expiring/` entry.
        for task in &mut tasks {
            *task = store
                .complete(&task.id, serde_json::json!("kept"))
                .unwrap()
                .into_task();
        }
    }
    let area = if ttl.is_some() { "expiring" } else { "active" };
    let grown = std::fs::metadata(root.join(area)).unwrap().size();
    let kept = tasks.pop().unwrap();
    for task in &tasks {
        assert!(store.delete(&task.id).unwrap());
    }
    (grown >= 64 * 1024).then_some(kept)
}

/// The calls that make what is under `base` now, durably: each directory
/// (parents first) and file, a file's further names as links (the lock
/// files left out: a store makes its own), then every directory fsynced.
fn durable_events(base: &Path) -> Vec<FsEvent> {
    fn walk(dir: &Path, seen: &mut BTreeMap<u64, PathBuf>, out: &mut Vec<FsEvent>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.push(FsEvent::CreateDir { path: path.clone() });
                walk(&path, seen, out);
            } else if dir.file_name() == Some("locks".as_ref()) {
            } else if let Some(first) = seen.get(&meta.ino()) {
                out.push(FsEvent::Link {
                    from: first.clone(),
                    to: path,
                });
            } else {
                seen.insert(meta.ino(), path.clone());
                out.push(FsEvent::Create { path: path.clone() });
                out.push(FsEvent::Write {
                    bytes: std::fs::read(&path).unwrap(),
                    path: path.clone(),
                });
                out.push(FsEvent::SyncFile { path });
            }
        }
    }
    let mut out = Vec::new();
    walk(base, &mut BTreeMap::new(), &mut out);
    let dirs: Vec<PathBuf> = std::iter::once(base.to_owned())
        .chain(out.iter().filter_map(|e| match e {
            FsEvent::CreateDir { path } => Some(path.clone()),
            _ => None,
        }))
        .collect();
    out.extend(dirs.into_iter().map(|path| FsEvent::SyncDir { path }));
    out
}
