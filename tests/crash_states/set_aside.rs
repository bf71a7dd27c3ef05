//! Files the store sets aside (a damaged task file, a name that is no
//! task file's, a stray entry of `tmp/`): in `quarantine/` or still where
//! they were after a power loss at any moment, never in neither.

use std::path::Path;

use std::sync::Arc;

use taskstore::{FileStore, FsEvent};

use crate::reopen::every_state;
use crate::workload;
use crate::{crash_states_from, recorded, recorded_store};

/// A task file (damaged, one name) and a name that is no task file's, each
/// set aside by a listing, and a stray entry of `tmp/` the open sets aside,
/// are in `quarantine/` or still where they were
/// after a power loss at any moment from the set-aside on, never in
/// neither: the file is linked into `quarantine/`, which is made durable,
/// before its old name goes. (Only the move of a file with `expiring/`
/// entries was made durable; the next write's fsync of `active/` then made
/// the file's leaving durable without its arrival, and 4 of the 16 crash
/// states after it lost the file, either kind. Then the move was a rename,
/// made durable in both: a power loss before the fsync of `quarantine/`
/// lost the file in 2 of the 18 crash states from then on for each name in
/// `active/`, 1 of 9 for the entry of `tmp/`.)
#[test]
fn a_file_set_aside_is_never_lost_by_a_power_loss() {
    let lost: Vec<String> = [
        ("active", "zz.json"),
        ("active", "notes.txt"),
        ("tmp", "notes.txt"),
    ]
    .into_iter()
    .filter_map(|(dir, name)| {
        let (lost, states) = set_aside_then_lost(dir, name);
        (!lost.is_empty()).then(|| {
            format!(
                "{dir}/{name} lost in {} of {states} states: {lost:#?}",
                lost.len()
            )
        })
    })
    .collect();
    assert!(lost.is_empty(), "{lost:#?}");
}

/// The crash states, from the moment the damaged file `name` of the
/// store's directory `area` began to be set aside (by a listing, from
/// `active/`; by the open's clean-up, from `tmp/`) to after a create that
/// followed, that hold it in neither place (or do not open); and how many
/// states there are.
fn set_aside_then_lost(area: &str, name: &str) -> (Vec<String>, usize) {
    use taskstore::{ListQuery, NewTask, TaskStore};
    let (dir, root, recorder, clock) = recorded_store("taskstore-aside");
    let open = || recorded(&root, &clock, &recorder).open().unwrap();
    drop(open());
    // A damaged file that has been there long: its bytes and name durable.
    let path = root.join(area).join(name);
    std::fs::write(&path, b"{garbage").unwrap();
    let mut events = recorder.events();
    events.extend([
        FsEvent::Create { path: path.clone() },
        FsEvent::Write {
            path: path.clone(),
            bytes: b"{garbage".to_vec(),
        },
        FsEvent::SyncFile { path },
        FsEvent::SyncDir {
            path: root.join(area),
        },
    ]);
    let from = recorder.len();
    let store = open();
    // The open reports what its clean-up set aside by event, a listing
    // what it sets aside in its `skipped`.
    let listed = store.list(&ListQuery::active()).unwrap().skipped.len();
    assert_eq!(listed, usize::from(area == "active"));
    store.create(NewTask::new()).unwrap();
    drop(store);
    let start = events.len() + 1;
    events.extend(recorder.events()[from..].iter().cloned());
    let scratch = workload::scratch_dir("taskstore-aside-states");
    let states = crash_states_from(dir.path(), &events, start, scratch.path());
    assert!(!states.is_empty());
    let open = |root: &Path| {
        FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .open()
    };
    let broken = every_state(states, open, |root| lost(root, area, name), |_| Vec::new());
    (broken.lines, broken.states)
}

/// `<area>/<name>` of the store at `root`, if it is neither in
/// `quarantine/` nor still there.
fn lost(root: &Path, area: &str, name: &str) -> Vec<String> {
    let aside = std::fs::read_dir(root.join("quarantine")).is_ok_and(|names| {
        names
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(name))
    });
    if aside || root.join(area).join(name).exists() {
        return Vec::new();
    }
    vec![format!("{area}/{name} neither set aside nor where it was")]
}

/// A damaged finished task's file in `done/` with its `expiring/` entry (a
/// second name of the file), set aside by a listing of history, is in
/// `quarantine/` or still in `done/` after a power loss at any moment from
/// the set-aside on, never in neither (and the store opens in each): its
/// entry goes only once the move is durable.
#[test]
fn a_damaged_finished_file_set_aside_with_its_index_entry_is_never_lost() {
    use taskstore::{ListQuery, NewTask, TaskStore};
    let (dir, root, recorder, clock) = recorded_store("taskstore-aside-done");
    let open = || recorded(&root, &clock, &recorder).open().unwrap();
    drop(open());
    // Damaged long ago: its bytes and both names durable.
    let path = root.join("done").join("zz.json");
    let entry = root.join("expiring").join("1893456000000000000.3600000.zz");
    std::fs::write(&path, b"{garbage").unwrap();
    std::fs::hard_link(&path, &entry).unwrap();
    let mut events = recorder.events();
    events.extend([
        FsEvent::Create { path: path.clone() },
        FsEvent::Write {
            path: path.clone(),
            bytes: b"{garbage".to_vec(),
        },
        FsEvent::SyncFile { path: path.clone() },
        FsEvent::Link {
            from: path.clone(),
            to: entry.clone(),
        },
        FsEvent::SyncDir {
            path: root.join("done"),
        },
        FsEvent::SyncDir {
            path: root.join("expiring"),
        },
    ]);
    let from = recorder.len();
    let store = open();
    let listed = store.list(&ListQuery::all()).unwrap().skipped.len();
    assert_eq!(listed, 1, "the damaged file is reported");
    assert!(
        !path.exists() && !entry.exists(),
        "set aside with its entry"
    );
    store.create(NewTask::new()).unwrap();
    drop(store);
    let start = events.len() + 1;
    events.extend(recorder.events()[from..].iter().cloned());
    let scratch = workload::scratch_dir("taskstore-aside-done-states");
    let states = crash_states_from(dir.path(), &events, start, scratch.path());
    assert!(!states.is_empty());
    let open = |root: &Path| {
        FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .open()
    };
    every_state(
        states,
        open,
        |root| lost(root, "done", "zz.json"),
        |_| Vec::new(),
    )
    .assert_none("a damaged finished file set aside");
}
