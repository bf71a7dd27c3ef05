//! I/O faults, the SQLite way: for every store operation, make the Nth call
//! through the file-system seam fail (EIO and ENOSPC, once or for good), for
//! every N until the operation gets through untouched. Each time:
//!
//! - the call fails with an [`Error::Io`] naming the operation and a path in
//!   the store, or succeeds (some failures, like removing an already
//!   superseded file, are not the caller's problem);
//! - afterwards — faults off, store reopened — every task is entirely its old
//!   version or entirely its new one (whole `Task` values compared), tasks the
//!   operation does not touch are unchanged, and a success means the new state;
//! - every invariant holds: nothing corrupt, no temp files after the reopen,
//!   no unfinished terminal move after a sweep, never a task in both areas.
//!
//! The old and new states come from running the operation without faults on
//! the same fixture under a `ManualClock`, so they are exact.
//! `TASKSTORE_FAULT_EXTRA_TASKS=n` adds n running and n finished tasks to the
//! fixture, which lengthens the sweeps of the whole-store operations.

#![cfg(feature = "fault-injection")]

#[path = "../common/mod.rs"]
mod common;
mod durability;
mod exhaustive;
mod index_entries;
mod leases;
mod set_aside;
mod sweeps;
mod unreadable;
mod writes;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskstore::{
    Durability, Error, EventLog, Fault, FaultInjector, FaultMode, FileStore, FsOp, ListQuery,
    ManualClock, NewTask, Task, TaskEventKind, TaskId, TaskStatus, TaskStore, TaskUpdate,
    UnreadableAction,
};
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

/// When the operations under test run: the dead owner's leases have lapsed,
/// the `expiring-*` tasks have expired.
fn now() -> OffsetDateTime {
    T0 + Duration::from_secs(10)
}

/// Every task id the fixture and the operations use.
const KNOWN: &[&str] = &[
    "orphan-1",
    "orphan-2",
    "target",
    "other-working",
    "other-input",
    "other-done",
    "expiring-active",
    "expiring-done",
    "new-task",
];

fn tid(s: &str) -> TaskId {
    TaskId::parse(s).unwrap()
}

fn extra_tasks() -> usize {
    std::env::var("TASKSTORE_FAULT_EXTRA_TASKS")
        .ok()
        .map(|v| v.parse().expect("TASKSTORE_FAULT_EXTRA_TASKS is a number"))
        .unwrap_or(0)
}

fn all_ids() -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = KNOWN.iter().map(|s| tid(s)).collect();
    for i in 0..extra_tasks() {
        ids.push(common::id("extra-working", i));
        ids.push(common::id("extra-done", i));
    }
    ids
}

/// Temp directories on tmpfs when there is one: the seam still sees every
/// fsync, but the sweep does not wait for a disk.
fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::Builder::new()
            .prefix("taskstore-faults")
            .tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

fn build_fixture(store: &Path) {
    let clock = ManualClock::new(T0);
    let open = |instance: &str, lease: u64| {
        FileStore::builder(store)
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .lease(Duration::from_secs(lease))
            .durability(Durability::Eventual)
            .open()
            .unwrap()
    };
    let dead = open("dead", 1);
    dead.create(NewTask::new().id(tid("orphan-1"))).unwrap();
    // With a TTL: a reap's move of it links its `expiring/` entry first,
    // and its name in `done/` only once that entry is durable.
    dead.create(
        NewTask::new()
            .id(tid("orphan-2"))
            .ttl(Duration::from_secs(3_600)),
    )
    .unwrap();
    let owner = open("owner", 3600);
    owner
        .create(NewTask::new().id(tid("target")).metadata("a", 1))
        .unwrap();
    let _ = owner
        .update(&tid("target"), TaskUpdate::new().status_message("started"))
        .unwrap();
    owner
        .create(NewTask::new().id(tid("other-working")))
        .unwrap();
    owner.create(NewTask::new().id(tid("other-input"))).unwrap();
    let _ = owner
        .update(
            &tid("other-input"),
            TaskUpdate::new()
                .status(TaskStatus::InputRequired)
                .input_requests(json!({"q": "?"})),
        )
        .unwrap();
    owner.create(NewTask::new().id(tid("other-done"))).unwrap();
    let _ = owner.complete(&tid("other-done"), json!("ok")).unwrap();
    let ttl = Duration::from_secs(5);
    owner
        .create(NewTask::new().id(tid("expiring-active")).ttl(ttl))
        .unwrap();
    owner
        .create(NewTask::new().id(tid("expiring-done")).ttl(ttl))
        .unwrap();
    let _ = owner.cancel(&tid("expiring-done"), None).unwrap();
    for i in 0..extra_tasks() {
        owner
            .create(NewTask::new().id(common::id("extra-working", i)))
            .unwrap();
        let done = common::id("extra-done", i);
        owner.create(NewTask::new().id(done.clone())).unwrap();
        let _ = owner.complete(&done, json!(i)).unwrap();
    }
}

fn nothing(_: &Path) {}

/// What an operation returned, and how many things it reported leaving out
/// (entries it could not read, tasks it could not sweep or reap).
type Call = fn(&FileStore) -> taskstore::Result<(String, usize)>;

/// One store operation under test.
struct Scenario {
    /// The instance id of the handle that runs it.
    instance: &'static str,
    /// Whether the store starts as the fixture (or does not exist yet).
    fixture: bool,
    /// Puts extra files in place right before the operation runs.
    plant: fn(&Path),
    /// Runs on the handle before faults are armed (a task of its own, say:
    /// only the handle that created a task owns it).
    prepare: fn(&FileStore),
    /// `None`: the operation is opening the store.
    call: Option<Call>,
    /// How many files `list` is expected to have set aside in the end.
    quarantined: usize,
}

impl Scenario {
    fn op(call: Call) -> Scenario {
        Scenario {
            instance: "owner",
            fixture: true,
            plant: nothing,
            prepare: |_| {},
            call: Some(call),
            quarantined: 0,
        }
    }
}

/// What one run of a scenario did.
struct Case {
    dir: tempfile::TempDir,
    /// The result, and how many things the call reported leaving out (in
    /// its result, or as events).
    result: taskstore::Result<(String, usize)>,
    fired: Vec<(taskstore::FsOp, PathBuf)>,
    /// Each task as the faulted handle itself reads it, faults off, before reopening.
    seen_by_handle: BTreeMap<TaskId, Option<Task>>,
    /// Each task right before the operation ran (after `prepare`).
    before: BTreeMap<TaskId, Option<Task>>,
}

impl Case {
    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(now()))
}

fn run_case(sc: &Scenario, template: &Path, arm: Option<(u64, Fault, FaultMode)>) -> Case {
    let dir = tempdir();
    let store = dir.path().join("store");
    if sc.fixture {
        common::copy_dir(template, &store);
    }
    let faults = FaultInjector::new();
    let events = Arc::new(EventLog::new());
    let builder = || {
        FileStore::builder(&store)
            .clock(clock())
            .instance_id(sc.instance)
            .fault_injector(faults.clone())
            .sink(events.clone())
    };
    let arm = || {
        if let Some((n, fault, sticky)) = arm {
            faults.fail_nth(n, fault, sticky);
        }
    };
    let mut seen_by_handle = BTreeMap::new();
    let mut before = BTreeMap::new();
    let result = match sc.call {
        None => {
            (sc.plant)(&store);
            arm();
            builder().open().map(|_| ("opened".to_owned(), 0))
        }
        Some(call) => {
            let s = builder().open().expect("open before faults are armed");
            (sc.prepare)(&s);
            for id in all_ids() {
                let t = s.get(&id).expect("read before faults are armed");
                before.insert(id, t.map(anonymous));
            }
            (sc.plant)(&store);
            arm();
            let reported_before = unreadable_events(&events);
            let result = call(&s).map(|(out, reported)| {
                (
                    without_tokens(&out),
                    reported + unreadable_events(&events) - reported_before,
                )
            });
            faults.disarm();
            for id in all_ids() {
                let t = s
                    .get(&id)
                    .unwrap_or_else(|e| panic!("the faulted handle cannot read {id}: {e}"));
                seen_by_handle.insert(id, t.map(anonymous));
            }
            result
        }
    };
    Case {
        dir,
        result,
        fired: faults.fired(),
        seen_by_handle,
        before,
    }
}

/// `task` without its owner's open token, which differs from one handle to
/// the next (each run of a scenario opens its own).
fn anonymous(mut task: Task) -> Task {
    task.owner_token = None;
    task
}

/// `debug` output without the owner tokens in it.
fn without_tokens(out: &str) -> String {
    regex::Regex::new(r#"owner_token: Some\("[0-9a-f]+"\)"#)
        .unwrap()
        .replace_all(out, "owner_token: _")
        .into_owned()
}

/// How many entries the store reported it could not read, as events.
fn unreadable_events(events: &EventLog) -> usize {
    events
        .snapshot()
        .iter()
        .filter(|r| r.event.kind == TaskEventKind::Unreadable)
        .count()
}

/// Every known task, read through a freshly opened handle without faults.
fn snapshot(store: &Path) -> BTreeMap<TaskId, Option<Task>> {
    let s = FileStore::builder(store)
        .clock(clock())
        .instance_id("checker")
        .open()
        .unwrap_or_else(|e| panic!("the store does not reopen: {e}"));
    all_ids()
        .into_iter()
        .map(|id| {
            let t = s
                .get(&id)
                .unwrap_or_else(|e| panic!("{id} unreadable: {e}"));
            (id, t.map(anonymous))
        })
        .collect()
}

/// A sweep of the reopened store deletes the fixture's expired tasks. Run
/// before anything else reads them: a `get` or a listing deletes an expired
/// task it meets, and so would hide a sweep that cannot find it.
fn check_swept(store: &Path, what: &str) {
    let s = FileStore::builder(store)
        .clock(clock())
        .instance_id("checker")
        .open()
        .unwrap_or_else(|e| panic!("{what}: the store does not reopen: {e}"));
    s.sweep_expired()
        .unwrap_or_else(|e| panic!("{what}: sweep: {e}"));
    for (area, id) in [("active", "expiring-active"), ("done", "expiring-done")] {
        assert!(
            !store.join(area).join(format!("{id}.json")).exists(),
            "{what}: {id} expired and is still in {area}/ after a sweep"
        );
    }
}

/// The invariants that hold after any failure, once the store is reopened.
fn check_invariants(store: &Path, sc: &Scenario, what: &str) {
    let s = FileStore::builder(store)
        .clock(clock())
        .instance_id("checker")
        .open()
        .unwrap_or_else(|e| panic!("{what}: the store does not reopen: {e}"));
    assert_eq!(
        common::files_in(store, "tmp"),
        Vec::<String>::new(),
        "{what}: temp files after reopen"
    );

    assert_eq!(
        common::half_moved(store),
        Vec::<String>::new(),
        "{what}: half-moved tasks after reopen"
    );
    let listed = s
        .list(&ListQuery::all())
        .unwrap_or_else(|e| panic!("{what}: list: {e}"));
    let known = all_ids();
    for t in &listed.tasks {
        assert!(known.contains(&t.id), "{what}: unknown task {}", t.id);
        assert!(t.revision >= 1);
    }
    assert_eq!(
        common::files_in(store, "quarantine").len(),
        sc.quarantined,
        "{what}: files set aside as corrupt"
    );
    s.sweep_expired()
        .unwrap_or_else(|e| panic!("{what}: sweep: {e}"));
    assert_eq!(
        common::files_in(store, "tmp"),
        Vec::<String>::new(),
        "{what}: temp files after sweep"
    );
    assert_eq!(
        common::unmoved(store),
        Vec::<String>::new(),
        "{what}: unfinished terminal moves after sweep"
    );

    assert_eq!(
        common::half_moved(store),
        Vec::<String>::new(),
        "{what}: half-moved tasks after sweep"
    );
}

fn errno(fault: Fault) -> i32 {
    match fault {
        Fault::Eio => libc::EIO,
        Fault::Enospc => libc::ENOSPC,
        other => panic!("no errno for {other:?}"),
    }
}

/// An injected failure must surface as `Error::Io` with the operation, a path
/// of the store (or above it) and the injected errno, all in its message.
fn check_error(e: &Error, fault: Fault, store: &Path, what: &str) {
    let Error::Io { op, path, source } = e else {
        panic!("{what}: expected Error::Io, got {e:?}");
    };
    assert!(!op.is_empty(), "{what}: no operation named");
    assert_eq!(source.raw_os_error(), Some(errno(fault)), "{what}: {e}");
    // A new store's directory is made durable by an fsync of its parent
    // (of every directory above it, for a store without its marker).
    assert!(
        path.starts_with(store) || store.starts_with(path),
        "{what}: {e} names a path outside the store"
    );
    let message = e.to_string();
    assert!(
        message.contains(op),
        "{what}: {message:?} does not name {op:?}"
    );
    assert!(
        message.contains(&path.display().to_string()),
        "{what}: {message:?} does not name its path"
    );
}

fn sweep(name: &str, sc: Scenario) {
    // The fixture, built once per operation and copied for every case.
    let fixture = tempdir();
    let template = fixture.path().join("store");
    build_fixture(&template);
    let baseline = run_case(&sc, &template, None);
    let old = if sc.call.is_none() && !sc.fixture {
        all_ids().into_iter().map(|id| (id, None)).collect()
    } else if sc.call.is_none() {
        // Of a copy: a `get` deletes the expired tasks it meets, and every
        // case starts from the template.
        let copy = tempdir();
        common::copy_dir(&template, &copy.path().join("store"));
        snapshot(&copy.path().join("store"))
    } else {
        baseline.before.clone()
    };
    assert!(baseline.fired.is_empty());
    let expected = match &baseline.result {
        Ok(out) => out.clone(),
        Err(e) => panic!("{name} fails without faults: {e}"),
    };
    check_swept(&baseline.store(), name);
    let new = snapshot(&baseline.store());
    check_invariants(&baseline.store(), &sc, name);
    let mut injected = 0;
    for fault in [Fault::Eio, Fault::Enospc] {
        for sticky in [FaultMode::Once, FaultMode::Sticky] {
            for n in 1.. {
                assert!(n < 10_000, "{name}: the operation never gets through");
                let what = format!("{name} with {fault:?} at call {n} ({sticky:?})");
                let case = run_case(&sc, &template, Some((n, fault, sticky)));
                let store = case.store();
                if case.fired.is_empty() {
                    // Past the operation's last call: it ran untouched.
                    assert_eq!(case.result.as_ref().ok(), Some(&expected), "{what}");
                    assert_eq!(snapshot(&store), new, "{what}");
                    break;
                }
                injected += 1;
                match &case.result {
                    Ok((out, reported)) if (out, *reported) != (&expected.0, expected.1) => {
                        // A pass over many tasks goes on past one it cannot
                        // handle: it must then say so.
                        assert!(
                            *reported > expected.1,
                            "{what}: succeeded differently without reporting it: {out} vs {}",
                            expected.0
                        );
                    }
                    Ok(_) => {}
                    Err(e) => check_error(e, fault, &store, &what),
                }
                for (id, t) in &case.seen_by_handle {
                    assert!(
                        t == &old[id] || t == &new[id],
                        "{what}: the handle reads {id} as {t:?}"
                    );
                }
                check_swept(&store, &what);
                let after = snapshot(&store);
                for (id, t) in &after {
                    assert!(
                        t == &old[id] || t == &new[id],
                        "{what}: after reopening, {id} is {t:?}; old {:?}, new {:?}",
                        old[id],
                        new[id]
                    );
                }
                if case.result.as_ref().ok() == Some(&expected) {
                    assert_eq!(after, new, "{what}: succeeded, so the new state");
                }
                check_invariants(&store, &sc, &what);
            }
        }
    }
    eprintln!("{name}: {injected} injected failures checked");
    assert!(injected >= 4, "{name}: the operation made no fallible call");
}

fn debug<T: std::fmt::Debug>(r: taskstore::Result<T>) -> taskstore::Result<(String, usize)> {
    r.map(|v| (format!("{v:?}"), 0))
}

/// The entries a pass reported, as (path, action), sorted.
fn reported(
    skipped: &[taskstore::backend::Skipped],
) -> Vec<(String, taskstore::backend::UnreadableAction)> {
    let mut out: Vec<_> = skipped
        .iter()
        .map(|s| (s.location.clone(), s.action))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup();
    out
}

/// Where in a recorded run the first event `is` holds is, after `from`.
fn first(
    events: &[taskstore::FsEvent],
    from: usize,
    is: impl Fn(&taskstore::FsEvent) -> bool,
) -> usize {
    from + events[from..]
        .iter()
        .position(is)
        .unwrap_or_else(|| panic!("no such call after {from}: {:#?}", &events[from..]))
}

/// Whether a recorded call is an fsync of the store's `area`.
fn synced(area: &str) -> impl Fn(&taskstore::FsEvent) -> bool + '_ {
    move |e| matches!(e, taskstore::FsEvent::SyncDir { path } if path.ends_with(area))
}

/// Whether a recorded call is an unlink in the store's `area`.
fn removed_from(area: &str) -> impl Fn(&taskstore::FsEvent) -> bool + '_ {
    move |e| matches!(e, taskstore::FsEvent::Remove { path } if in_area(path, area))
}

/// Whether `path`'s directory is the store's `area`.
fn in_area(path: &Path, area: &str) -> bool {
    path.parent().and_then(Path::file_name) == Some(area.as_ref())
}

/// A handle on the store in `dir` at `clock`'s time whose calls that
/// change the disk `recorder` logs.
fn recorded(dir: &Path, clock: &ManualClock, recorder: &taskstore::Recorder) -> FileStore {
    FileStore::builder(dir)
        .clock(Arc::new(clock.clone()))
        .recorder(recorder.clone())
        .open()
        .unwrap()
}

/// A handle on a new store at `root`, at a `ManualClock`'s time, its calls
/// through a fault injector: the handle, the clock and the injector.
fn faulted(root: &Path) -> (FileStore, ManualClock, FaultInjector) {
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let store = FileStore::builder(root)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    (store, clock, faults)
}
