//! Directory compaction on open under the crash model: an open alone
//! compacts an `active/` that grew large and emptied out into a new
//! directory, swaps the two (`RENAME_EXCHANGE`) and removes the old one.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use taskstore::{Durability, FileStore, FsEvent, ListQuery, NewTask, Task, TaskStore};

use crate::crash_states_from;
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
    let Some(kept) = grown_and_emptied(&root) else {
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
    let made_from = from + recorded.len();
    events.extend(recorded);
    let scratch = workload::scratch_dir("taskstore-compaction-states");
    let mut broken = Vec::new();
    let mut count = 0;
    for (start, tasks) in [(from, vec![&kept]), (made_from, vec![&kept, &made])] {
        let at = scratch.path().join(start.to_string());
        let states = crash_states_from(dir.path(), &events, start, &at);
        count += states.len();
        for (label, at) in states {
            let store = match FileStore::builder(at.join(STORE))
                .durability(Durability::Immediate)
                .open()
            {
                Ok(store) => store,
                Err(e) => {
                    broken.push(format!("{label}: open: {e}"));
                    continue;
                }
            };
            let running = store.list(&ListQuery::active()).map(|l| l.tasks);
            for task in &tasks {
                match store.get(&task.id) {
                    Ok(Some(got)) if &&got == task => {}
                    got => broken.push(format!("{label}: {}: {got:?}", task.id)),
                }
                if !running.as_ref().is_ok_and(|r| r.contains(task)) {
                    broken.push(format!("{label}: {} not listed: {running:?}", task.id));
                }
            }
        }
    }
    eprintln!("compaction on open: {count} crash states");
    assert!(count > 0);
    assert!(
        broken.is_empty(),
        "{} broken reads in {count} crash states, the first: {:#?}",
        broken.len(),
        &broken[..broken.len().min(4)]
    );
}

/// A store at `root` whose `active/` grew to 6,000 running tasks and then
/// kept only the last one (made through a handle gone since): that task;
/// `None` where directories shrink by themselves (under 64 KiB grown).
fn grown_and_emptied(root: &Path) -> Option<Task> {
    let store = FileStore::builder(root)
        .durability(Durability::Eventual)
        .max_active(100_000)
        .open()
        .unwrap();
    let mut tasks: Vec<Task> = (0..6_000)
        .map(|_| store.create(NewTask::new()).unwrap())
        .collect();
    let grown = std::fs::metadata(root.join("active")).unwrap().size();
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
