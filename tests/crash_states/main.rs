//! The crash-state explorer: what a power loss at any moment of a workload
//! can leave on disk, and whether the store, reopened on each such state,
//! keeps its promises.
//!
//! Run it with `cargo test --all-features --test crash_states`
//! (`-- --nocapture` prints the figures of passing runs too).
//!
//! # How
//!
//! 1. **Record.** A workload runs against a real `FileStore` whose
//!    file-system seam logs every call that changes the disk or makes a
//!    change durable ([`Recorder`](taskstore::Recorder), feature
//!    `fault-injection`): create, write, fsync of a file, rename, unlink,
//!    fsync of a directory, mkdir. Each store call of the workload is a
//!    step that knows its slice of the log and what it returned.
//! 2. **Model** (`model.rs`). The log is replayed into a model of the disk
//!    that keeps a *live* namespace (what the process sees) and a *durable*
//!    one (what a power loss keeps for sure), with inodes, so that a rename
//!    moves a file's identity, and its durable bytes, with it. The model is
//!    conservative:
//!    - a file's bytes become durable only when that file is fsynced; a
//!      never-fsynced file comes back empty, cut to a prefix, or whole;
//!    - each change to a name (create, rename in, rename out, unlink,
//!      mkdir, rmdir) becomes durable only when its own directory is
//!      fsynced after it, and independently of every other pending change:
//!      a rename across directories is two halves, the new name in the
//!      target directory and the removal of the old one in the source; an
//!      exchange of two names (a compaction's swap of two directories,
//!      which carry their contents: directories are known by identity, not
//!      path) is one change, both halves or neither, and a later change to
//!      one of its names (the removal of the directory swapped out) one of
//!      its own, which stands whether the exchange is applied or not;
//!    - a directory's contents exist after a crash only if its own entry in
//!      its parent survived;
//!    - a file whose last live name went (an unlink, or a rename over it)
//!      is freed, and a file system without a journal may write the freeing
//!      before the directory change: a repair then clears every name still
//!      pointing at it, so a durable or pending name of a freed file may
//!      come back cleared (reuse of the freed inode is not modelled).
//! 3. **Crash states.** After every recorded call (a crash point), the
//!    states a power loss could leave are the durable namespace plus any
//!    subset of the pending changes (each name ends at the value of its
//!    last applied change) and any choice of content for each file whose
//!    bytes are not durable. While those number at most 256 all are tried;
//!    beyond, a deterministic sample: nothing pending survived, everything
//!    did, everything with every pending file content lost or cut, and each
//!    single name or content set to each of its other values against both
//!    "nothing" and "everything". A run too large for that (`large.rs`: a
//!    sweep of more than one chunk, thousands of changes pending) is
//!    checked at chosen crash points only, each with "nothing",
//!    "everything" and a seeded sample of states in which every name and
//!    content takes one of its values at random.
//! 4. **Check** (`explore.rs`). Each distinct state is written to a fresh
//!    directory (on tmpfs when `/dev/shm` exists; lock files are left to the
//!    store to recreate), and a store is opened on it with the workload's
//!    clock at the crash. It must open, and then `get` every task, `list`
//!    all and active tasks, `get` again, and `cancel` every task that reads
//!    terminal or whose terminal state was acknowledged; then, with the
//!    clock a week later, `sweep_expired`. Under `Durability::Immediate`:
//!    - every acknowledged call (one that returned before the crash point)
//!      is there exactly as returned: `get` gives the task it returned (or
//!      nothing after a delete, or after expiry); the call in flight may
//!      show its old or its new state, nothing else (lease renewals, claims
//!      and releases are held to this like every other write);
//!    - nothing is torn: every task file decodes (no `get` error, nothing
//!      set aside);
//!    - `list` agrees with `get`, and `list(active)` holds exactly the
//!      running tasks;
//!    - a terminal task stays final: a later `cancel` returns
//!      `AlreadyTerminal` with the same task;
//!    - expired tasks are swept: the sweep a week later leaves no file of a
//!      task with a TTL in `active/` or `done/`, and no `expiring/` entry
//!      (a finished task's file without its entry would be left).
//!
//!    Under `Durability::Eventual` containment is checked: the store
//!    opens, nothing panics, every task read is a version some call wrote
//!    (or absent), and a damaged file is set aside by the listing; and
//!    expired tasks are swept (a finished task's file that came back
//!    without its `expiring/` entry gets it back from the listing of all
//!    tasks before the sweep). Reads that disagree (`list` against `get`)
//!    are counted in the summary as advisory, not failed.
//!
//! A failure lists, per operation (the acknowledged call whose promise
//! broke, or the call in flight), how many crash states break which
//! invariant; per invariant, where it first broke; and then capped
//! (operation, crash point, state, invariant) lines. A state is named by
//! what differs from "none applied" or "all applied" of the pending changes.
//!
//! # What it cannot show
//!
//! - It models the seam's calls only. Reads, the lock files, and anything
//!   the store does outside the seam are not part of the model; a call that
//!   bypassed the seam would be invisible to it.
//! - It trusts the kernel within one boot: what the process wrote it reads
//!   back (the workload runs on a real file system; only power loss is
//!   modelled, not a kernel that loses or reorders what it acknowledged to
//!   a reader).
//! - Data within one file is not reordered beyond "a prefix survived": no
//!   holes, no garbage from other files, no reordering of writes to the
//!   same file (the store writes each file once, with one call).
//! - It is conservative where real file systems are kinder (ext4 with
//!   `data=ordered` orders a rename after the data it renames, and many
//!   journals commit a directory's changes in order), so a protocol that
//!   passes here does not lean on those kindnesses; a failure here may need
//!   a less kind file system, or bad luck, to happen for real.
//! - The sample beyond 256 combinations does not try every mix of two or
//!   more changes against each other; the workloads keep the pending
//!   changes per crash point few, and the run prints the largest number it
//!   met.
//! - One thread, one workload: concurrency between handles is the business
//!   of the race and two-process tests.
//! - A crash state is written out name by name, a file with several names
//!   (a finished task's `done/` file and its `expiring/` entry) as hard
//!   links of one file, so the sweep's proof that an index entry is its
//!   task's file holds as on the disk. `verify` is not run here: the
//!   power-cut test runs it after every cut.

#![cfg(feature = "fault-injection")]

mod compaction;
mod explore;
mod large;
mod mixed;
mod model;
mod reopen;
mod set_aside;
mod workload;

use taskstore::{Durability, FsEvent};

use crate::explore::{Report, explore};
use crate::workload::Run;

/// Every kind of seam call appears in the run's log, or the run would not
/// exercise the model.
fn assert_covers_every_call(run: &Run) {
    let kinds: std::collections::BTreeSet<&str> = run
        .events
        .iter()
        .map(|e| match e {
            FsEvent::Create { .. } => "create",
            FsEvent::Write { .. } => "write",
            FsEvent::SyncFile { .. } => "fsync",
            FsEvent::Rename { .. } => "rename",
            FsEvent::Link { .. } => "link",
            FsEvent::Remove { .. } => "unlink",
            FsEvent::SyncDir { .. } => "fsync dir",
            FsEvent::CreateDir { .. } => "mkdir",
            _ => "other",
        })
        .collect();
    let mut want = vec!["create", "write", "rename", "unlink", "mkdir"];
    if run.durability == Durability::Immediate {
        want.extend(["fsync", "fsync dir"]);
    }
    for kind in want {
        assert!(kinds.contains(kind), "{}: no {kind} recorded", run.name);
    }
}

fn assert_passes(report: &Report) {
    eprintln!("{}", report.summary());
    assert!(report.states > 0, "no crash state was checked");
    assert!(
        report.violations.is_empty(),
        "\n{}\nfailing operations: {:?}",
        report.failure(),
        report.failing_steps()
    );
}

/// The positive control: create, update, lease renewal, delete, the sweep
/// of running tasks and create over an expired running task each change
/// `active/` alone and make that durable, so no crash state may break a
/// promise. (It also shows the explorer does not fail everything.)
#[test]
fn durable_write_paths_survive_every_crash_state() {
    let run = workload::durable_paths();
    assert_covers_every_call(&run);
    assert_passes(&explore(&run));
}

/// Every operation of the store under `Durability::Immediate`.
#[test]
fn every_operation_survives_every_crash_state() {
    let run = workload::every_operation(Durability::Immediate);
    assert_covers_every_call(&run);
    assert_passes(&explore(&run));
}

/// Every operation under `Durability::Eventual`: containment only.
#[test]
fn eventual_crash_states_are_contained() {
    let run = workload::every_operation(Durability::Eventual);
    assert_covers_every_call(&run);
    assert_passes(&explore(&run));
}

/// The batch paths under `Durability::Immediate`: a reap of several
/// orphans, the sweep's large paths and a listing that removes several
/// expired tasks keep every promise in every crash state.
#[test]
fn batch_paths_survive_every_crash_state() {
    assert_passes(&explore(&workload::batch_paths(Durability::Immediate)));
}

/// The batch paths under `Durability::Eventual`: containment only.
#[test]
fn eventual_batch_paths_are_contained() {
    assert_passes(&explore(&workload::batch_paths(Durability::Eventual)));
}

/// The newer batch paths under `Durability::Immediate`: lease batches of
/// several tasks (a claim, a renewal by id), a reap whose terminal moves
/// are settled stripe by stripe (two stripes taken by another process
/// between the halves, before and after the batch's fsync of `expiring/`,
/// their tasks left as a crash would leave them and deleted or finished
/// later), entries given back by a listing of history,
/// and large sweeps of unread and due tasks, the second the first call to
/// make `active/` durable since the moves it removes.
#[test]
fn newer_batch_paths_survive_every_crash_state() {
    let run = workload::newer_paths(Durability::Immediate);
    assert_covers_every_call(&run);
    assert_passes(&explore(&run));
}

/// The newer batch paths under `Durability::Eventual`: containment only
/// (every state opens, reads back only versions written, a damaged file
/// once at most, and a sweep a week later leaves no task with a TTL).
#[test]
fn eventual_newer_batch_paths_are_contained() {
    let run = workload::newer_paths(Durability::Eventual);
    assert_covers_every_call(&run);
    assert_passes(&explore(&run));
}

/// The crash states a power loss right after the recorded calls could
/// leave, each written out in a directory of its own under `scratch`.
fn crash_states_after(
    base: &std::path::Path,
    events: &[FsEvent],
    scratch: &std::path::Path,
) -> Vec<(String, std::path::PathBuf)> {
    crash_states_from(base, events, events.len(), scratch)
}

/// The distinct crash states a power loss right after any of the recorded
/// calls from the `from`th on (counted from 1) could leave, each written
/// out in a directory of its own under `scratch`, labelled with the call
/// it came after.
fn crash_states_from(
    base: &std::path::Path,
    events: &[FsEvent],
    from: usize,
    scratch: &std::path::Path,
) -> Vec<(String, std::path::PathBuf)> {
    let mut disk = model::Disk::new(base);
    let mut seen = std::collections::HashSet::new();
    let mut states = Vec::new();
    for (at_call, event) in events.iter().enumerate().map(|(i, e)| (i + 1, e)) {
        disk.apply(event);
        if at_call < from {
            continue;
        }
        for state in disk.crash_states() {
            if !seen.insert(state.tree.digest()) {
                continue;
            }
            let at = scratch.join(states.len().to_string());
            std::fs::create_dir_all(&at).unwrap();
            state.tree.materialize(&at);
            states.push((format!("after {event:?}: {}", state.label), at));
        }
    }
    states
}

/// An `Immediate` handle whose `complete` loses to a finished move of an
/// `Eventual` handle answers `AlreadyTerminal` with the winner, and that
/// answer holds across a power loss: the winner's file, its `expiring/`
/// entry (with a TTL) and its name in `done/`, in that order, are made
/// durable before it is given. (They were not: the `Eventual` move had
/// fsynced nothing, and of the crash states after the answer some brought
/// the task back running, some lost it, some left its file torn. Then the
/// entry was not: with a TTL, 24 of the 48 crash states after the answer
/// left the finished task in `done/` without it, for no sweep to find.)
/// A scratch directory, the store's root in it, a recorder of the store's
/// calls and a clock at 2030-01-01: what the crash tests below set up.
fn recorded_store(
    prefix: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    taskstore::Recorder,
    taskstore::ManualClock,
) {
    let dir = workload::scratch_dir(prefix);
    let root = dir.path().join(workload::STORE);
    let clock = taskstore::ManualClock::new(time::macros::datetime!(2030-01-01 0:00 UTC));
    (dir, root, taskstore::Recorder::new(), clock)
}

/// A builder of a handle on `root` at `clock`, its calls kept by `recorder`.
fn recorded(
    root: &std::path::Path,
    clock: &taskstore::ManualClock,
    recorder: &taskstore::Recorder,
) -> taskstore::FileStoreBuilder {
    taskstore::FileStore::builder(root)
        .clock(std::sync::Arc::new(clock.clone()))
        .recorder(recorder.clone())
}

#[test]
fn an_already_terminal_answer_over_an_eventual_move_survives_a_power_loss() {
    for ttl in [None, Some(std::time::Duration::from_secs(3600))] {
        let (broken, states) = already_terminal_over_an_eventual_move(ttl);
        assert!(
            broken.is_empty(),
            "TTL {ttl:?}: {} of {states} states: {broken:#?}",
            broken.len()
        );
    }
}

/// The crash states after an `AlreadyTerminal` answer of an `Immediate`
/// handle over a move an `Eventual` one finished, of a task with `ttl`, in
/// which the answer does not hold: the task is not the winner, or its file
/// is in `done/` without its `expiring/` entry; and how many states there
/// are.
fn already_terminal_over_an_eventual_move(
    ttl: Option<std::time::Duration>,
) -> (Vec<String>, usize) {
    use std::sync::Arc;
    use taskstore::{FileStore, NewTask, TaskId, TaskStatus, TaskStore, Transition};
    let (dir, root, recorder, clock) = recorded_store("taskstore-mixed");
    let open = |durability: Durability| {
        recorded(&root, &clock, &recorder)
            .instance_id("i")
            .durability(durability)
            .open()
            .unwrap()
    };
    let immediate = open(Durability::Immediate);
    let id = TaskId::parse("t").unwrap();
    let mut new = NewTask::new().id(id.clone());
    if let Some(ttl) = ttl {
        new = new.ttl(ttl);
    }
    immediate.create(new).unwrap();
    let eventual = open(Durability::Eventual);
    let won = eventual
        .complete(&id, serde_json::json!("the winner"))
        .unwrap();
    assert!(won.is_applied());
    let lost = immediate
        .complete(&id, serde_json::json!("too late"))
        .unwrap();
    let Transition::AlreadyTerminal(winner) = lost else {
        panic!("{lost:?}")
    };
    drop((eventual, immediate));
    let entries: Vec<_> = std::fs::read_dir(root.join("expiring"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), usize::from(ttl.is_some()), "{entries:?}");
    let scratch = workload::scratch_dir("taskstore-mixed-states");
    let states = crash_states_after(dir.path(), &recorder.events(), scratch.path());
    assert!(!states.is_empty());
    let mut broken = Vec::new();
    let count = states.len();
    for (label, at) in states {
        let store = at.join(workload::STORE);
        if store.join("done/t.json").exists()
            && let Some(entry) = entries.first()
            && !store.join("expiring").join(entry).exists()
        {
            broken.push(format!("{label}: in done/ without its expiring/ entry"));
        }
        let store = FileStore::builder(store)
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap();
        match store.get(&id) {
            Ok(Some(task)) if task == winner && task.status == TaskStatus::Completed => {}
            got => broken.push(format!("{label}: {got:?}")),
        }
    }
    (broken, count)
}

/// Fails unless, in every crash state of `states` (images of `base`),
/// the finished task whose file is `done` keeps its `expiring/` entry
/// `entry` (both paths under `base`).
fn assert_no_entry_lost(
    states: &[(String, std::path::PathBuf)],
    base: &std::path::Path,
    done: &std::path::Path,
    entry: &std::path::Path,
) {
    let (done, entry) = (
        done.strip_prefix(base).unwrap(),
        entry.strip_prefix(base).unwrap(),
    );
    let lost: Vec<&String> = states
        .iter()
        .filter(|(_, at)| at.join(done).exists() && !at.join(entry).exists())
        .map(|(label, _)| label)
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} crash states lost the entry: {lost:#?}",
        lost.len(),
        states.len()
    );
}

/// A finished task with a TTL, made through `open()`'s handle, whose
/// `expiring/` entry is then made a copy (a store copied without its hard
/// links; the copy's bytes and name durable): the task, its `done/` path,
/// its entry's path, and every call so far (the recorder's, then the
/// copy's).
fn finished_with_a_copied_entry(
    root: &std::path::Path,
    recorder: &taskstore::Recorder,
    open: impl Fn() -> taskstore::FileStore,
) -> (
    taskstore::Task,
    std::path::PathBuf,
    std::path::PathBuf,
    Vec<FsEvent>,
) {
    use taskstore::{NewTask, TaskStore};
    let store = open();
    let task = store
        .create(NewTask::new().ttl(std::time::Duration::from_secs(3600)))
        .unwrap();
    assert!(
        store
            .complete(&task.id, serde_json::json!(1))
            .unwrap()
            .is_applied()
    );
    drop(store);
    let done = root.join("done").join(format!("{}.json", task.id));
    let names: Vec<_> = std::fs::read_dir(root.join("expiring"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let [entry] = names.as_slice() else {
        panic!("{names:?}")
    };
    let entry = root.join("expiring").join(entry);
    let bytes = std::fs::read(&entry).unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::fs::write(&entry, &bytes).unwrap();
    let mut events = recorder.events();
    events.extend([
        FsEvent::Remove {
            path: entry.clone(),
        },
        FsEvent::Create {
            path: entry.clone(),
        },
        FsEvent::Write {
            path: entry.clone(),
            bytes,
        },
        FsEvent::SyncFile {
            path: entry.clone(),
        },
        FsEvent::SyncDir {
            path: root.join("expiring"),
        },
    ]);
    (task, done, entry, events)
}

/// A finished task whose `expiring/` entry is a copy (a store copied
/// without its hard links) is given the entry again as a link by a listing
/// of history, and a power loss at any moment of that keeps an entry of
/// the task's name in `expiring/` while `done/` holds its file: the copy
/// is replaced in one step (a link under a temp name, renamed over it),
/// never removed first, and it is kept from being freed (parked) until
/// the link is durable; the temp names a crash leaves in `tmp/` go at the
/// next open. (It was unlinked, then the link made: 5 of the 60 crash
/// states from then on left the finished task without its entry, which no
/// sweep would find; renamed over with the copy unparked, 2 of 194 did.)
#[test]
fn a_copied_index_entry_given_back_as_a_link_is_never_lost_by_a_power_loss() {
    use std::sync::Arc;
    use taskstore::{FileStore, ListQuery, TaskStore};
    let (dir, root, recorder, clock) = recorded_store("taskstore-relink");
    let open = || recorded(&root, &clock, &recorder).open().unwrap();
    let (task, done, entry, mut events) = finished_with_a_copied_entry(&root, &recorder, open);
    let from = recorder.len();
    let store = open();
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 1);
    drop(store);
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(&done).unwrap().ino(),
            std::fs::metadata(&entry).unwrap().ino(),
            "the entry is a link again"
        );
    }
    let start = events.len() + 1;
    events.extend(recorder.events()[from..].iter().cloned());
    let scratch = workload::scratch_dir("taskstore-relink-states");
    let states = crash_states_from(dir.path(), &events, start, scratch.path());
    assert!(!states.is_empty());
    assert_no_entry_lost(&states, dir.path(), &done, &entry);
    // The temp names the replacement left are temp files to the next open,
    // which removes them.
    for (label, at) in &states {
        let root = at.join(workload::STORE);
        let store = FileStore::builder(&root)
            .clock(Arc::new(clock.clone()))
            .open()
            .unwrap();
        assert_eq!(
            store.get(&task.id).unwrap().map(|t| t.status),
            Some(taskstore::TaskStatus::Completed),
            "{label}"
        );
        // Its own parks gone too (a handle's thread removes them by then).
        drop(store);
        let left: Vec<_> = std::fs::read_dir(root.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{label}: left in tmp/: {left:?}");
    }
}

/// The same replacement cut short after its rename (its fsync of
/// `expiring/` fails: a process dying there), then the next open, which
/// removes the temp files of writers gone: the park that kept the copy is
/// one of them, and goes only once the rename it guards is durable. (The
/// open made only `active/` durable first: 1 of 197 crash states, the
/// park's removal applied and the rename not, lost the entry.)
#[test]
fn a_park_left_by_a_replacement_cut_short_goes_only_once_its_rename_is_durable() {
    use taskstore::{Fault, FaultInjector, FsOp, ListQuery, TaskStore};
    let (dir, root, recorder, clock) = recorded_store("taskstore-relink-cut");
    let open = |faults: Option<FaultInjector>| {
        let builder = recorded(&root, &clock, &recorder);
        match faults {
            Some(faults) => builder.fault_injector(faults),
            None => builder,
        }
        .open()
        .unwrap()
    };
    let (_, done, entry, mut events) =
        finished_with_a_copied_entry(&root, &recorder, || open(None));
    let from = recorder.len();
    let faults = FaultInjector::new();
    let store = open(Some(faults.clone()));
    faults.fail_at(FsOp::SyncDir, root.join("expiring"), Fault::Eio);
    // Cut short: the listing fails, or goes on without the entry's fsync.
    let _ = store.list(&ListQuery::all());
    drop(store);
    faults.disarm();
    let parks: Vec<_> = std::fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!parks.is_empty(), "the cut-short replacement left its park");
    drop(open(None));
    let start = events.len() + 1;
    events.extend(recorder.events()[from..].iter().cloned());
    let scratch = workload::scratch_dir("taskstore-relink-cut-states");
    let states = crash_states_from(dir.path(), &events, start, scratch.path());
    assert!(!states.is_empty());
    assert_no_entry_lost(&states, dir.path(), &done, &entry);
}

/// Two first opens of a new store at once: the one that finds the store's
/// directory (and perhaps its areas) already made by the other, which may
/// die before its fsyncs, makes their names durable itself before it
/// acknowledges anything, so that a power loss at any later moment keeps
/// the task it created. (It fsynced the parent only for a directory it
/// made itself: of the 5 crash states after its create, the one without
/// the other open's `mkdir` of the store's directory lost the store with
/// the task, whether the other open had made the areas too or not.)
#[test]
fn a_store_another_open_began_keeps_what_this_open_acknowledged_across_a_power_loss() {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::Arc;
    use taskstore::{FileStore, ManualClock, NewTask, Recorder, TaskStore};
    // The other open made the store's directory, its areas too or not, or
    // a directory above the store as well.
    for (areas, nested) in [(false, false), (true, false), (false, true)] {
        let dir = workload::scratch_dir("taskstore-race-open");
        let under = if nested {
            std::path::PathBuf::from("nest").join(workload::STORE)
        } else {
            std::path::PathBuf::from(workload::STORE)
        };
        let root = dir.path().join(&under);
        // The other open's `mkdir`s, never fsynced: it died.
        let mut made = Vec::new();
        if nested {
            made.push(dir.path().join("nest"));
        }
        made.push(root.clone());
        if areas {
            made.extend(
                ["active", "tmp", "quarantine", "locks", "expiring", "done"].map(|a| root.join(a)),
            );
        }
        let mut events = Vec::new();
        for path in made {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .unwrap();
            events.push(FsEvent::CreateDir { path });
        }
        let recorder = Recorder::new();
        let clock = ManualClock::new(time::macros::datetime!(2030-01-01 0:00 UTC));
        let store = FileStore::builder(&root)
            .clock(Arc::new(clock.clone()))
            .recorder(recorder.clone())
            .open()
            .unwrap();
        let task = store.create(NewTask::new()).unwrap();
        drop(store);
        events.extend(recorder.events());
        let scratch = workload::scratch_dir("taskstore-race-open-states");
        let states = crash_states_after(dir.path(), &events, scratch.path());
        assert!(!states.is_empty());
        let lost: Vec<String> = states
            .iter()
            .filter(|(_, at)| {
                let store = FileStore::builder(at.join(&under))
                    .clock(Arc::new(clock.clone()))
                    .open()
                    .unwrap();
                store.get(&task.id).unwrap().as_ref() != Some(&task)
            })
            .map(|(label, _)| label.clone())
            .collect();
        assert!(
            lost.is_empty(),
            "areas made by the other open: {areas}, a directory above too: {nested}; \
             {} of {} crash states lost the task: {lost:#?}",
            lost.len(),
            states.len()
        );
    }
}
