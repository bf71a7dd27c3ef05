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

mod common;

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

/// Leftovers of a crashed writer: a temp file, and a terminal move stopped
/// between its two steps (the terminal task still in `active/`).
fn plant_leftovers(store: &Path) {
    fs::write(store.join("tmp/target.999999.7.tmp"), b"{\"format\":1,\"ta").unwrap();
    fs::rename(
        store.join("done/other-done.json"),
        store.join("active/other-done.json"),
    )
    .unwrap();
}

/// The fixture as format 1 left it: no `expiring/`, a marker of format 1.
fn plant_format_1(store: &Path) {
    common::make_format_1(store);
}

/// The same without its marker (known by its `done/` without `expiring/`).
fn plant_format_1_without_marker(store: &Path) {
    common::make_format_1(store);
    fs::remove_file(store.join("taskstore.json")).unwrap();
}

/// Two files that are not readable tasks, for `list` to set aside.
const PLANTED_CORRUPT: usize = 2;
fn plant_corrupt(store: &Path) {
    fs::write(store.join("active/garbage.json"), b"{ not json").unwrap();
    fs::write(store.join("done/empty.json"), b"").unwrap();
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

#[test]
fn faults_in_open_of_a_new_store() {
    sweep(
        "open (new store)",
        Scenario {
            fixture: false,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

#[test]
fn faults_in_open_with_crash_leftovers() {
    sweep(
        "open (leftovers)",
        Scenario {
            plant: plant_leftovers,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

#[test]
fn faults_in_open_of_a_store_of_format_1() {
    sweep(
        "open (format 1)",
        Scenario {
            plant: plant_format_1,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

/// An open that stopped after making `expiring/` had the next open take
/// the store for one of format 2, its finished tasks never indexed (so
/// never swept).
#[test]
fn faults_in_open_of_a_store_of_format_1_that_lost_its_marker() {
    sweep(
        "open (format 1, no marker)",
        Scenario {
            plant: plant_format_1_without_marker,
            call: None,
            ..Scenario::op(|_| unreachable!())
        },
    );
}

#[test]
fn faults_in_create() {
    sweep(
        "create",
        Scenario::op(|s| debug(s.create(NewTask::new().id(tid("new-task")).metadata("k", "v")))),
    );
}

#[test]
fn faults_in_update() {
    sweep(
        "update",
        Scenario::op(|s| {
            debug(s.update(
                &tid("target"),
                TaskUpdate::new().status_message("changed").metadata("b", 2),
            ))
        }),
    );
}

#[test]
fn faults_in_complete() {
    sweep(
        "complete",
        Scenario::op(|s| debug(s.complete(&tid("target"), json!({"answer": 42})))),
    );
}

#[test]
fn faults_in_fail() {
    sweep(
        "fail",
        Scenario::op(|s| debug(s.fail(&tid("target"), json!({"code": "x"})))),
    );
}

#[test]
fn faults_in_cancel() {
    sweep(
        "cancel",
        Scenario::op(|s| debug(s.cancel(&tid("target"), Some("stop".into())))),
    );
}

#[test]
fn faults_in_delete() {
    sweep("delete", Scenario::op(|s| debug(s.delete(&tid("target")))));
    sweep(
        "delete (done)",
        Scenario::op(|s| debug(s.delete(&tid("other-done")))),
    );
}

#[test]
fn faults_in_sweep_expired() {
    sweep(
        "sweep_expired",
        Scenario {
            plant: plant_leftovers,
            ..Scenario::op(|s| {
                s.sweep()
                    .map(|r| (format!("{}", r.deleted), r.missed.len() + r.skipped.len()))
            })
        },
    );
}

#[test]
fn faults_in_renew_lease() {
    // Only the handle that created a task owns it: each case's handle
    // creates the one it renews.
    let own = |s: &FileStore| {
        s.create(NewTask::new().id(tid("new-task"))).unwrap();
    };
    sweep(
        "renew_lease",
        Scenario {
            prepare: own,
            ..Scenario::op(|s| debug(s.renew_lease(&tid("new-task"))))
        },
    );
    sweep(
        "renew_leases",
        Scenario {
            prepare: own,
            ..Scenario::op(|s| debug(s.renew_leases()))
        },
    );
}

#[test]
fn faults_in_reap_orphans() {
    sweep(
        "reap_orphans",
        Scenario {
            instance: "reaper",
            ..Scenario::op(|s| {
                s.reap()
                    .map(|r| (format!("{:?}", r.tasks), r.missed.len() + r.skipped.len()))
            })
        },
    );
}

#[test]
fn faults_in_list_with_quarantine() {
    sweep(
        "list (quarantine)",
        Scenario {
            plant: plant_corrupt,
            quarantined: PLANTED_CORRUPT,
            ..Scenario::op(|s| {
                s.list(&ListQuery::all())
                    .map(|p| (format!("{:?}", p.tasks), p.skipped.len()))
            })
        },
    );
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

/// The `task.unreadable` events since the log's sequence number `from`,
/// as (location, action), sorted.
fn unreadable_since(log: &EventLog, from: u64) -> Vec<(String, String)> {
    let mut out: Vec<_> = log
        .snapshot()
        .into_iter()
        .filter(|r| r.seq >= from && r.event.kind == TaskEventKind::Unreadable)
        .map(|r| {
            (
                r.event.data["location"].as_str().unwrap_or("").to_owned(),
                r.event.data["action"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A task file the device can no longer read (every read of it fails with
/// EIO, through the seam) is never a reason to fail a pass, never set
/// aside, never silently left out: `list`, `sweep` and `reap` return `Ok`,
/// do the rest of their work, leave the file where it is and report it (in
/// their result and as a `task.unreadable` event); `get` of it is an error
/// naming the file. Once the device reads it again, the same handle lists
/// and gets the task.
#[test]
fn an_unreadable_task_file_is_reported_and_left_and_never_fails_a_pass() {
    use taskstore::FsOp;
    use taskstore::backend::UnreadableAction::LeftInPlace;

    let dir = tempdir();
    let root = dir.path().join("store");
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let log = Arc::new(EventLog::new());
    let open = |instance: &str, lease: u64| {
        FileStore::builder(&root)
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .lease(Duration::from_secs(lease))
            .fault_injector(faults.clone())
            .sink(log.clone())
            .open()
            .unwrap()
    };
    let ttl = Duration::from_secs(5);
    let dead = open("dead", 1);
    let orphan = dead.create(NewTask::new().id(tid("orphan"))).unwrap();
    drop(dead);
    let store = open("owner", 3600);
    let good = store.create(NewTask::new().id(tid("good"))).unwrap();
    let unreadable = store.create(NewTask::new().id(tid("unreadable"))).unwrap();
    for id in ["old", "expired"] {
        store.create(NewTask::new().id(tid(id)).ttl(ttl)).unwrap();
        let _ = store.complete(&tid(id), json!(id)).unwrap();
    }
    store.create(NewTask::new().id(tid("moving"))).unwrap();
    let moving = store
        .complete(&tid("moving"), json!("moved"))
        .unwrap()
        .into_task();
    // A terminal move stopped between its steps: the finished task still
    // in `active/` (final for readers, moved on by the next sweep).
    let moving_file = root.join("active/moving.json");
    std::fs::rename(root.join("done/moving.json"), &moving_file).unwrap();
    // Listed once while readable: the handle's snapshot holds every file.
    assert_eq!(store.list(&ListQuery::active()).unwrap().tasks.len(), 3);
    clock.advance(Duration::from_secs(10));

    let active_file = root.join("active/unreadable.json");
    let done_file = root.join("done/old.json");
    for file in [&active_file, &moving_file, &done_file] {
        faults.fail_at(FsOp::Read, file, Fault::Eio);
    }
    // A change the listing must look at: the running task's file is
    // replaced, so it has to be read again (its last good version is not
    // the task any more).
    for file in [&active_file, &moving_file] {
        std::fs::write(root.join("tmp/x"), std::fs::read(file).unwrap()).unwrap();
        std::fs::rename(root.join("tmp/x"), file).unwrap();
    }
    // Sorted by path, as `reported` gives them.
    let all = vec![
        (moving_file.display().to_string(), LeftInPlace),
        (active_file.display().to_string(), LeftInPlace),
        (done_file.display().to_string(), LeftInPlace),
    ];
    let running = all[..2].to_vec();
    let events = |from: u64| unreadable_since(&log, from);
    let as_events = |r: &[(String, taskstore::backend::UnreadableAction)]| {
        r.iter()
            .map(|(p, _)| (p.clone(), "leftInPlace".to_owned()))
            .collect::<Vec<_>>()
    };

    let from = log.last_seq() + 1;
    let page = store
        .list(&ListQuery::all())
        .expect("list goes on past a file it cannot read");
    let ids: Vec<&str> = page.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        ids,
        ["good", "orphan"],
        "every readable live task, in order"
    );
    assert_eq!(reported(&page.skipped), all, "{:?}", page.skipped);
    for s in &page.skipped {
        assert!(
            s.reason.contains(&s.location),
            "the reason names the file: {s:?}"
        );
    }
    assert_eq!(events(from), as_events(&all), "one event per file");
    // The listing deleted the readable expired task it met (a handle that
    // meets one deletes it); one that expires after it is the sweep's.
    assert_eq!(store.get(&tid("expired")).unwrap(), None);
    store
        .create(NewTask::new().id(tid("late")).ttl(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));

    for (id, file) in [
        ("unreadable", &active_file),
        ("moving", &moving_file),
        ("old", &done_file),
    ] {
        match store.get(&tid(id)) {
            Err(Error::Io { path, source, .. }) => {
                assert_eq!(&path, file);
                assert_eq!(source.raw_os_error(), Some(libc::EIO));
            }
            other => panic!("get {id}: expected Error::Io naming {file:?}, got {other:?}"),
        }
        let message = store.get(&tid(id)).unwrap_err().to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
    }

    let from = log.last_seq() + 1;
    let swept = store
        .sweep()
        .expect("a sweep goes on past a file it cannot read");
    assert_eq!(swept.deleted, 1, "the readable expired task is swept");
    assert!(swept.missed.is_empty(), "{:?}", swept.missed);
    assert_eq!(reported(&swept.skipped), all, "{:?}", swept.skipped);
    assert_eq!(events(from), as_events(&all));

    let from = log.last_seq() + 1;
    let reaped = store
        .reap()
        .expect("a reap goes on past a file it cannot read");
    let ids: Vec<&str> = reaped.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["orphan"], "the readable orphan is reaped");
    assert_eq!(
        reported(&reaped.skipped),
        running,
        "a reap reads `active/` only: {:?}",
        reaped.skipped
    );
    assert_eq!(events(from), as_events(&running));

    assert!(
        active_file.exists() && moving_file.exists() && done_file.exists(),
        "left in place"
    );
    assert_eq!(common::files_in(&root, "quarantine"), Vec::<String>::new());
    assert_eq!(store.get(&tid("expired")).unwrap(), None);

    // The device reads them again: nothing was lost.
    faults.disarm();
    let page = store.list(&ListQuery::all()).unwrap();
    assert!(page.skipped.is_empty(), "{:?}", page.skipped);
    assert!(
        page.tasks.iter().any(|t| t.id == unreadable.id),
        "listed again once readable: {:?}",
        page.tasks
    );
    assert_eq!(store.get(&unreadable.id).unwrap(), Some(unreadable));
    assert_eq!(store.get(&moving.id).unwrap(), Some(moving));
    assert_eq!(store.sweep().unwrap().cleaned, 1, "the move finished");
    assert!(!moving_file.exists());
    assert_eq!(store.get(&good.id).unwrap(), Some(good));
    assert_eq!(
        store.get(&orphan.id).unwrap().unwrap().status,
        TaskStatus::Failed
    );
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

/// A handle on the store in `dir` that writes without fsyncs at `clock`'s
/// time: a test's filler.
fn filler(dir: &Path, clock: &ManualClock) -> FileStore {
    FileStore::builder(dir)
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Eventual)
        .open()
        .unwrap()
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

/// A listing of history that gives finished tasks their lost `expiring/`
/// entries back links each, then makes them durable with one fsync of
/// `expiring/` for all of them (FORMAT.md, "Index"), not one a task.
#[test]
fn restored_index_entries_are_made_durable_with_one_fsync() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = recorded(dir.path(), &clock, &taskstore::Recorder::new());
    for _ in 0..3 {
        let task = store
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    }
    drop(store);
    let index = dir.path().join("expiring");
    for entry in fs::read_dir(&index).unwrap() {
        fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let from = recorder.len();
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 3);
    let events = recorder.events();
    let links = events[from..]
        .iter()
        .filter(|e| matches!(e, FsEvent::Link { to, .. } if in_area(to, "expiring")))
        .count();
    let syncs = events[from..]
        .iter()
        .filter(|e| synced("expiring")(e))
        .count();
    assert_eq!((links, syncs), (3, 1), "three entries linked, one fsync");
    assert_eq!(fs::read_dir(&index).unwrap().count(), 3);
}

/// A listing that gives finished tasks their lost `expiring/` entries back,
/// when one link fails and the fsync of those it made fails too, keeps the
/// task it could not link for the next listing: without its entry no sweep
/// would ever find it.
#[test]
fn an_index_entry_not_given_back_beside_a_failed_fsync_is_given_back_later() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, _clock, faults) = faulted(root);
    for i in 0..3 {
        let task = store
            .create(NewTask::new().ttl(Duration::from_secs(60)))
            .unwrap();
        assert!(store.complete(&task.id, json!(i)).unwrap().is_applied());
    }
    drop(store);
    let index = root.join("expiring");
    let mut entries: Vec<PathBuf> = fs::read_dir(&index)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for entry in &entries {
        fs::remove_file(entry).unwrap();
    }
    let (store, _clock, faults2) = faulted(root);
    drop(faults);
    faults2.fail_at(FsOp::Link, &entries[0], Fault::Eio);
    faults2.fail_at(FsOp::SyncDir, &index, Fault::Eio);
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 3);
    assert_eq!(fs::read_dir(&index).unwrap().count(), 2, "one link failed");
    faults2.disarm();
    assert_eq!(store.list(&ListQuery::all()).unwrap().tasks.len(), 3);
    assert!(
        entries[0].exists(),
        "the entry whose link failed is given back by the next listing"
    );
}

/// A finished task with a TTL is never, after a power loss, in `done/`
/// without its `expiring/` entry (no sweep would ever find it): a terminal
/// move makes the entry durable before it gives the task its name in
/// `done/`, and a delete or a sweep makes the task's removal durable before
/// it removes the entry. Shown on the calls the store makes, in order.
#[test]
fn a_finished_tasks_index_entry_is_durable_first_and_removed_last() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let ttl = Duration::from_secs(60);
    for finish in ["delete", "sweep"] {
        let task = store.create(NewTask::new().ttl(ttl)).unwrap();
        let from = recorder.len();
        assert!(
            store
                .complete(&task.id, json!(finish))
                .unwrap()
                .is_applied()
        );
        let events = recorder.events();
        let index_durable = first(&events, from, synced("expiring"));
        let named_in_done = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Link { to, .. } if in_area(to, "done")),
        );
        assert!(
            index_durable < named_in_done,
            "complete: the entry is durable (call {index_durable}) before the task is named in done/ (call {named_in_done})"
        );
        let from = recorder.len();
        match finish {
            "delete" => assert!(store.delete(&task.id).unwrap()),
            _ => {
                clock.advance(ttl * 2);
                assert_eq!(store.sweep_expired().unwrap(), 1);
            }
        }
        let events = recorder.events();
        let gone_durable = first(&events, from, synced("done"));
        let entry_removed = first(&events, from, removed_from("expiring"));
        assert!(
            gone_durable < entry_removed,
            "{finish}: the task's removal is durable (call {gone_durable}) before its entry goes (call {entry_removed})"
        );
        assert_eq!(store.get(&task.id).unwrap(), None);
        assert_eq!(
            fs::read_dir(dir.path().join("expiring")).unwrap().count(),
            0
        );
    }
}

/// An `expiring/` entry whose task is gone from `done/` is removed only
/// after an fsync of `done/`: the removal of the task's file may not be
/// durable yet (here another handle's sweep failed its closing fsync, and
/// keeps its removals pending), and a power loss must never bring back a
/// finished task without its entry, which no sweep would find (or, where a
/// file is freed before the removal of its last name is durable, its name
/// pointing at a freed file).
#[test]
fn a_stale_index_entry_goes_only_after_its_tasks_removal_is_durable() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let recorder = taskstore::Recorder::new();
    let open = |faults: Option<&FaultInjector>| {
        let builder = FileStore::builder(&root)
            .clock(Arc::new(clock.clone()))
            .recorder(recorder.clone());
        match faults {
            Some(faults) => builder.fault_injector(faults.clone()),
            None => builder,
        }
        .open()
        .unwrap()
    };
    let (failing, other) = (open(Some(&faults)), open(None));
    let ttl = Duration::from_secs(60);
    for i in 0..3 {
        let task = failing.create(NewTask::new().ttl(ttl)).unwrap();
        assert!(failing.complete(&task.id, json!(i)).unwrap().is_applied());
    }
    clock.advance(ttl * 2);
    let done = root.join("done");
    faults.fail_at(FsOp::SyncDir, &done, Fault::Eio);
    failing.sweep_expired().unwrap_err();
    assert_eq!(
        fs::read_dir(&done).unwrap().count(),
        0,
        "unlinked, not durably"
    );
    assert_eq!(fs::read_dir(root.join("expiring")).unwrap().count(), 3);

    let from = recorder.len();
    assert_eq!(other.sweep_expired().unwrap(), 0, "nothing left to delete");
    let events = recorder.events();
    let entry_removed = first(&events, from, removed_from("expiring"));
    let done_durable = first(&events, from, synced("done"));
    assert!(
        done_durable < entry_removed,
        "the removals from done/ are durable (call {done_durable}) before a stale entry goes (call {entry_removed})"
    );
    assert_eq!(fs::read_dir(root.join("expiring")).unwrap().count(), 0);
}

/// A corrupt finished task set aside takes its `expiring/` entry with it
/// only once its move is durable: first its name in `quarantine/` (a
/// link, made durable before its name in `done/` goes), then its leaving
/// `done/`, then the entry. Else, under a file system that orders nothing
/// between directories, a power loss could bring the file back without
/// its entry (no sweep would find it), or lose it from both directories.
#[test]
fn a_set_aside_finished_task_loses_its_entry_only_after_its_move_is_durable() {
    use taskstore::FsEvent;
    let dir = tempdir();
    let root = dir.path().join("store");
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .clock(Arc::new(ManualClock::new(T0)))
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let task = store
        .create(NewTask::new().ttl(Duration::from_secs(60)))
        .unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    // Damaged in place: the same inode, so the entry is still its name.
    let file = root.join("done").join(format!("{}.json", task.id));
    fs::write(&file, b"{\"format\":1,\"task\":").unwrap();

    let from = recorder.len();
    let page = store.list(&ListQuery::all()).unwrap();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    assert_eq!(page.skipped[0].action, UnreadableAction::SetAside);
    assert!(!file.exists());
    assert_eq!(fs::read_dir(root.join("expiring")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(root.join("quarantine")).unwrap().count(), 1);

    let events = recorder.events();
    let moved = first(
        &events,
        from,
        |e| matches!(e, FsEvent::Link { to, .. } if in_area(to, "quarantine")),
    );
    let quarantine_durable = first(&events, moved, synced("quarantine"));
    let left = first(&events, from, removed_from("done"));
    let done_durable = first(&events, left, synced("done"));
    let entry_removed = first(&events, from, removed_from("expiring"));
    assert!(
        quarantine_durable < left && done_durable < entry_removed,
        "linked in (call {moved}), durable in quarantine/ (call {quarantine_durable}) \
         before it leaves done/ (call {left}), gone from done/ durably (call \
         {done_durable}) before the entry goes (call {entry_removed})"
    );
}

/// A sweep makes its removals durable once, after the last of them: one
/// fsync of `active/` and one of `done/` for a pass of three batches, not
/// one per batch (a reader sees none of the expired tasks before the fsync
/// either way), and the sweep returns only after them; the `expiring/`
/// entries of the finished tasks go after the fsync of `done/`. The same
/// for a sweeper that listed the store before it was filled, which reads
/// the new files itself (`src/file/unread.rs`; running tasks alone, so that
/// no fsync before a removal from `done/` makes its removals durable).
#[test]
fn a_sweep_makes_its_removals_durable_once_after_the_last() {
    use taskstore::FsEvent;
    const RUNNING: usize = 2_500;
    for (listed_first, finished) in [(false, 5), (true, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let ttl = Duration::from_secs(60);
        let recorder = taskstore::Recorder::new();
        let open = || recorded(dir.path(), &clock, &recorder);
        let early = listed_first.then(|| {
            let store = open();
            assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
            store
        });
        {
            let filler = filler(dir.path(), &clock);
            // The finished tasks first, so that they list in the first
            // batch: its removals from `done/` then follow an fsync of
            // `active/` made before any removal (see `settle_moves`), not
            // one between batches.
            common::finished_with_ttl(&filler, finished, ttl);
            clock.advance(Duration::from_millis(1));
            for _ in 0..RUNNING {
                filler.create(NewTask::new().ttl(ttl)).unwrap();
            }
        }
        let store = early.unwrap_or_else(open);
        clock.advance(ttl * 2);
        let from = recorder.len();
        assert_eq!(store.sweep_expired().unwrap(), RUNNING + finished);
        let events = recorder.events();
        let at = |is: &dyn Fn(&FsEvent) -> bool| -> Vec<usize> {
            (from..events.len()).filter(|&i| is(&events[i])).collect()
        };
        let removed = |area: &'static str| {
            at(&move |e| matches!(e, FsEvent::Remove { path } if in_area(path, area)))
        };
        let synced = |area: &'static str| {
            at(&move |e| matches!(e, FsEvent::SyncDir { path } if path.ends_with(area)))
        };
        for (area, count) in [("active", RUNNING), ("done", finished)] {
            let removals = removed(area);
            assert_eq!(
                removals.len(),
                count,
                "listed first {listed_first}, {area}: every expired task's file is removed"
            );
            let Some((&first, &last)) = removals.first().zip(removals.last()) else {
                continue;
            };
            let after_first: Vec<usize> = synced(area).into_iter().filter(|&i| i > first).collect();
            assert_eq!(
                after_first.len(),
                1,
                "listed first {listed_first}, {area}: one fsync once the removals began, for the whole pass (calls {after_first:?})"
            );
            assert!(
                after_first[0] > last,
                "listed first {listed_first}, {area}: the fsync (call {}) comes after the last removal (call {last})",
                after_first[0]
            );
        }
        let unindexed = removed("expiring");
        assert_eq!(unindexed.len(), finished);
        if let Some(done_durable) = synced("done").into_iter().max() {
            assert!(
                unindexed.iter().all(|&i| i > done_durable),
                "the finished tasks' entries go after their removal is durable (call {done_durable}): {unindexed:?}"
            );
        }
        assert_eq!(fs::read_dir(dir.path().join("active")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("done")).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(dir.path().join("expiring")).unwrap().count(),
            0
        );
    }
}

/// A sweep's batch of finished tasks makes `active/` durable before its
/// removals from `done/` (a terminal move's last unlink there is not made
/// durable by the move), but not again while nothing has changed in
/// `active/` since (the sweeping handle's watch would have noticed the
/// unlink that ends any move): the first sweep fsyncs `active/` once, a
/// second with no move since not at all, a third after more tasks finished
/// once again.
#[test]
fn a_sweep_makes_active_durable_before_removing_finished_tasks_only_when_something_moved() {
    const EACH: usize = 300; // a batch that takes every stripe
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let sweeper = recorded(dir.path(), &clock, &recorder);
    assert!(sweeper.list(&ListQuery::active()).unwrap().tasks.is_empty());
    let filler = filler(dir.path(), &clock);
    // Two sets, the second expiring a minute after the first.
    common::finished_with_ttl(&filler, EACH, Duration::from_secs(60));
    common::finished_with_ttl(&filler, EACH, Duration::from_secs(120));
    let sweep = |after: Duration| {
        clock.advance(after);
        let from = recorder.len();
        assert_eq!(sweeper.sweep_expired().unwrap(), EACH);
        let events = recorder.events();
        let first_removal = first(&events, from, removed_from("done"));
        events[from..first_removal]
            .iter()
            .filter(|e| synced("active")(e))
            .count()
    };
    assert_eq!(sweep(Duration::from_secs(61)), 1, "the first sweep");
    assert_eq!(
        sweep(Duration::from_secs(60)),
        0,
        "a sweep with no move in active/ since the last"
    );
    common::finished_with_ttl(&filler, EACH, Duration::from_secs(1));
    assert_eq!(
        sweep(Duration::from_secs(2)),
        1,
        "a sweep after tasks finished since"
    );
}

/// A sweep whose closing fsync of `active/` fails returns that error, naming
/// the directory, and loses nothing: its removals stay pending on the handle,
/// and the next sweep makes them durable (an fsync of `active/` even with
/// nothing left to remove).
#[test]
fn a_sweep_whose_closing_fsync_fails_says_so_and_the_next_makes_it_durable() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let ttl = Duration::from_secs(60);
    for _ in 0..3 {
        store.create(NewTask::new().ttl(ttl)).unwrap();
    }
    clock.advance(ttl * 2);
    let active = root.join("active");
    faults.fail_at(FsOp::SyncDir, &active, Fault::Eio);
    let error = store.sweep_expired().unwrap_err();
    let said = error.to_string();
    assert!(
        said.contains("fsync") && said.contains(&active.display().to_string()),
        "the error names the call and the directory: {said}"
    );
    assert_eq!(fs::read_dir(&active).unwrap().count(), 0);
    faults.disarm();
    let from = recorder.len();
    assert_eq!(store.sweep_expired().unwrap(), 0);
    let events = recorder.events();
    assert!(
        events[from..].iter().any(synced("active")),
        "the next sweep makes the pending removals durable: {:?}",
        &events[from..]
    );
}

/// A write over a running task's file first gives that file a second name
/// in `tmp/` (its park), and removes the park only once the new version is
/// durable: after the fsync of `active/` for an update, of `done/` for a
/// terminal transition (which returns without an fsync of `active/`). A
/// later removal of the finished task's file from `done/` comes after an
/// fsync of `active/`. Shown on the calls the store makes, in order (the
/// crash-state explorer shows what each order guards against).
#[test]
fn a_replaced_file_is_parked_until_its_replacement_is_durable() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(dir.path())
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let name = format!("{}.json", task.id);
    let is_park_of = |path: &Path| {
        in_area(path, "tmp")
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{}.", task.id)))
    };
    for (call, durable_in) in [("update", "active"), ("complete", "done")] {
        let from = recorder.len();
        let applied = match call {
            "update" => store
                .update(&task.id, TaskUpdate::new().metadata("k", json!(1)))
                .unwrap(),
            _ => store.complete(&task.id, json!("done")).unwrap(),
        };
        assert!(applied.is_applied());
        let events = recorder.events();
        let parked = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Link { from, to } if in_area(from, "active") && is_park_of(to)),
        );
        let park = match &events[parked] {
            FsEvent::Link { to, .. } => to.clone(),
            _ => unreachable!(),
        };
        let replaced = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Rename { to, .. } if in_area(to, "active") && to.ends_with(&name)),
        );
        let durable = first(&events, replaced, synced(durable_in));
        let unparked = first(
            &events,
            from,
            |e| matches!(e, FsEvent::Remove { path } if *path == park),
        );
        assert!(
            parked < replaced && durable < unparked,
            "{call}: parked at call {parked}, replaced at {replaced}, durable in {durable_in}/ at {durable}, unparked at {unparked}"
        );
        if call == "complete" {
            assert!(
                !events[from..].iter().any(synced("active")),
                "a terminal transition returns without an fsync of active/"
            );
        }
    }
    assert_eq!(
        fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0,
        "every park is gone"
    );
    let from = recorder.len();
    assert!(store.delete(&task.id).unwrap());
    let events = recorder.events();
    let settled = first(&events, from, synced("active"));
    let removed = first(&events, from, removed_from("done"));
    assert!(
        settled < removed,
        "delete: active/ is durable (call {settled}) before the file in done/ goes (call {removed})"
    );
}

/// A temp file whose writer is gone may be a park guarding a rename into
/// `active/` whose fsync has not run yet: `open` and a sweep remove it only
/// after an fsync of `active/` of their own.
#[test]
fn dead_writers_temp_files_go_only_after_an_fsync_of_active() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    drop(FileStore::open(dir.path()).unwrap());
    for (when, name) in [("open", "t-open.1.1.tmp"), ("sweep", "t-sweep.1.2.tmp")] {
        let recorder = taskstore::Recorder::new();
        if when == "open" {
            fs::write(dir.path().join("tmp").join(name), b"left").unwrap();
        }
        let store = FileStore::builder(dir.path())
            .recorder(recorder.clone())
            .open()
            .unwrap();
        if when == "sweep" {
            fs::write(dir.path().join("tmp").join(name), b"left").unwrap();
            store.sweep_expired().unwrap();
        }
        let events = recorder.events();
        let removed = first(
            &events,
            0,
            |e| matches!(e, FsEvent::Remove { path } if path.ends_with(name)),
        );
        let settled = events[..removed].iter().rposition(synced("active"));
        assert!(
            settled.is_some(),
            "{when}: the temp file went (call {removed}) with no fsync of active/ before it: {events:#?}"
        );
    }
}

/// A half-moved finished task (still in `active/`) whose file turns
/// unreadable after the handle read it never fails a sweep: the sweep
/// finishes the other moves and leaves this one for later, and `get` names
/// the file.
#[test]
fn a_sweep_goes_on_past_an_interrupted_move_it_cannot_read() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let faults = FaultInjector::new();
    let store = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    for id in ["stuck", "movable"] {
        store.create(NewTask::new().id(tid(id))).unwrap();
        assert!(store.complete(&tid(id), json!(id)).unwrap().is_applied());
        // A terminal move stopped between its steps.
        fs::rename(
            root.join(format!("done/{id}.json")),
            root.join(format!("active/{id}.json")),
        )
        .unwrap();
    }
    // Read once while readable: the handle knows both moves are unfinished.
    assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
    let stuck = root.join("active/stuck.json");
    faults.fail_at(FsOp::Read, &stuck, Fault::Eio);
    store
        .sweep()
        .expect("a sweep goes on past a move it cannot finish");
    assert!(
        root.join("done/movable.json").exists(),
        "the other move is finished"
    );
    assert!(!root.join("active/movable.json").exists());
    assert!(stuck.exists(), "left in place");
    match store.get(&tid("stuck")) {
        Err(Error::Io { path, .. }) => assert_eq!(path, stuck),
        other => panic!("get must name the file it cannot read, got {other:?}"),
    }
}

/// A sweep of hundreds of finished tasks (read and removed as it meets
/// them, under every stripe) past files that fail: one whose unlink fails
/// every time, one that cannot be read, one whose `active/` name cannot be
/// looked at. Nothing is lost and nothing reported twice: the sweep reports
/// the first as missed (its error naming the operation and the file) and
/// the second as skipped, removes every other task once, and once the
/// device is well again the next sweep removes the two.
#[test]
fn a_sweep_of_many_finished_tasks_past_failing_files_reports_each_once_and_loses_nothing() {
    use taskstore::FsOp;

    const FINISHED: usize = 300; // read and removed as the sweep meets them
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let log = Arc::new(EventLog::with_capacity(4 * FINISHED));
    let sweeper = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .sink(log.clone())
        .open()
        .unwrap();
    let writer = filler(dir.path(), &clock);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&writer, FINISHED, ttl);
    let file = |area: &str, id: &TaskId| dir.path().join(area).join(format!("{id}.json"));
    let (unlinks, reads, looks) = (&ids[10], &ids[20], &ids[30]);
    faults.fail_at(FsOp::Remove, file("done", unlinks), Fault::Eio);
    faults.fail_at(FsOp::Open, file("done", reads), Fault::Eio);
    faults.fail_at(FsOp::Stat, file("active", looks), Fault::Eio);
    clock.advance(ttl * 2);

    let reported = |from: u64| -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = log
            .snapshot()
            .into_iter()
            .filter(|r| r.seq >= from && r.event.kind == TaskEventKind::Expired)
            .map(|r| tid(r.event.data["taskId"].as_str().unwrap()))
            .collect();
        ids.sort();
        ids
    };
    let from = log.last_seq() + 1;
    let swept = sweeper.sweep().unwrap();
    let first = reported(from);
    assert_eq!(swept.deleted, FINISHED - 2, "{swept:?}");
    assert_eq!(
        first.len(),
        FINISHED - 2,
        "each task removed is reported once"
    );
    assert_eq!(
        swept.missed.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [unlinks],
        "{swept:?}"
    );
    let message = swept.missed[0].error.to_string();
    assert!(
        message.contains("remove")
            && message.contains(&file("done", unlinks).display().to_string()),
        "the error names the operation and the file: {message}"
    );
    assert_eq!(
        swept
            .skipped
            .iter()
            .map(|s| s.id.as_ref())
            .collect::<Vec<_>>(),
        [Some(reads)],
        "{swept:?}"
    );

    faults.disarm();
    let from = log.last_seq() + 1;
    let again = sweeper.sweep().unwrap();
    let mut second = reported(from);
    assert_eq!(again.deleted, 2, "{again:?}");
    let mut left = vec![unlinks.clone(), reads.clone()];
    left.sort();
    assert_eq!(second, left);
    second.extend(first);
    second.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(second, all, "every task reported once over the two sweeps");
    for area in ["active", "done", "expiring"] {
        assert_eq!(
            fs::read_dir(dir.path().join(area)).unwrap().count(),
            0,
            "{area}/ is empty"
        );
    }
}

/// A sweep of finished tasks in several chunks of 1,024, by a handle that
/// had not listed the store (no complete snapshot, so no watch's mark to
/// prove nothing moved), makes `active/` durable once: it brings the
/// snapshot up to date first, and the chunks after the first see nothing
/// moved since.
#[test]
fn a_sweep_of_finished_tasks_in_several_chunks_makes_active_durable_once() {
    const FINISHED: usize = 2_100; // three chunks
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let ttl = Duration::from_secs(60);
    common::finished_with_ttl(&filler(dir.path(), &clock), FINISHED, ttl);
    let recorder = taskstore::Recorder::new();
    let sweeper = recorded(dir.path(), &clock, &recorder);
    clock.advance(ttl * 2);
    let from = recorder.len();
    assert_eq!(sweeper.sweep_expired().unwrap(), FINISHED);
    let events = &recorder.events()[from..];
    let count = |is: &dyn Fn(&taskstore::FsEvent) -> bool| events.iter().filter(|e| is(e)).count();
    assert_eq!(
        count(&synced("active")),
        1,
        "one fsync of active/ for the whole sweep"
    );
    assert_eq!(count(&removed_from("done")), FINISHED);
}

/// When the kernel refuses a handle a change-notice watch (inotify's
/// per-user limits: `EMFILE` at the instances', `ENOSPC` at the watches';
/// here `ENOSPC`, injected at the seam), the handle lists by file status:
/// every listing still has every other handle's writes, and the handle
/// says so once, naming the directory and the error, however many
/// listings try again.
#[test]
fn a_refused_change_notice_watch_is_said_once_and_listings_still_have_every_write() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let faults = FaultInjector::new();
    let reader = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let writer = FileStore::open(&root).unwrap();
    let (active, done) = (root.join("active"), root.join("done"));
    faults.fail_at(FsOp::Watch, &active, Fault::Enospc);
    faults.fail_at(FsOp::Watch, &done, Fault::Enospc);
    let listed = |query: &ListQuery| -> Vec<TaskId> {
        let mut ids = common::ids_of(&reader, query);
        ids.sort();
        ids
    };
    let logged = common::Logged::default();
    tracing::subscriber::with_default(logged.clone(), || {
        let (mut running, mut finished) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            running.push(writer.create(NewTask::new()).unwrap().id);
            running.sort();
            assert_eq!(listed(&ListQuery::active()), running);
            let id = running.remove(0);
            let done = writer.complete(&id, json!({"done": true})).unwrap();
            assert!(matches!(done, taskstore::Transition::Applied(_)));
            finished.push(id);
            finished.sort();
            assert_eq!(listed(&ListQuery::active()), running);
            assert_eq!(
                listed(&ListQuery::all().status(TaskStatus::Completed)),
                finished
            );
        }
    });
    let tried = |dir: &Path| {
        faults
            .fired()
            .iter()
            .filter(|(op, path)| *op == FsOp::Watch && path == dir)
            .count()
    };
    assert!(
        tried(&active) >= 4 && tried(&done) >= 2,
        "listings try again: {:?}",
        faults.fired()
    );
    let said = logged.warnings();
    assert_eq!(said.len(), 1, "said once: {said:?}");
    assert!(
        said[0].field("dir") == Some(&*active.display().to_string())
            && said[0]
                .field("error")
                .is_some_and(|e| e.contains("No space left")),
        "the warning names the directory and the error: {:?}",
        said[0]
    );
}

/// A running task whose bytes the snapshot does not keep (past its 64 MiB
/// budget) is read by the listing that returns it. A passing I/O error
/// there is reported, and the next listing reads the file again: the task
/// is listed once the device answers. (It was left out of every later
/// listing, and of its owner's renewals, until its file changed.)
#[test]
fn a_task_past_the_snapshots_budget_is_read_again_after_a_passing_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let faults = FaultInjector::new();
    let writer = common::budget_store(root, None, None);
    let file = |id: &TaskId| root.join("active").join(format!("{id}.json"));
    common::fill_the_snapshot_budget(&writer, root, || {});
    let reader = common::budget_store(root, None, Some(&faults));
    assert_eq!(reader.list(&ListQuery::active()).unwrap().tasks.len(), 2);
    // Made after: read into the snapshot by a later listing, past the
    // budget; with more than 64 running tasks, none is kept decoded either.
    for _ in 0..64 {
        writer.create(NewTask::new()).unwrap();
    }
    let late = writer.create(NewTask::new()).unwrap();
    let listed = reader.list(&ListQuery::active()).unwrap();
    assert_eq!(listed.tasks.len(), 67);
    faults.fail_at(taskstore::FsOp::Read, file(&late.id), Fault::Eio);
    let failed = reader.list(&ListQuery::active()).unwrap();
    assert_eq!(failed.tasks.len(), 66);
    assert_eq!(failed.skipped.len(), 1, "{:?}", failed.skipped);
    assert_eq!(failed.skipped[0].id.as_ref(), Some(&late.id));
    faults.disarm();
    let again = reader.list(&ListQuery::active()).unwrap();
    assert!(again.skipped.is_empty(), "{:?}", again.skipped);
    assert!(
        again.tasks.iter().any(|t| t.id == late.id),
        "the task is listed again"
    );
    assert_eq!(reader.get(&late.id).unwrap().as_ref(), Some(&late));
}

/// A stale `expiring/` entry (its task's file gone from `done/` by a crash
/// between the two removals) whose removal fails every time: the sweep
/// still deletes every other expired task, and says what it could not do
/// in its log, not as a failed sweep. (Every sweep failed, and left every
/// expired task of that page.)
#[test]
fn a_stale_index_entry_that_cannot_be_removed_never_stops_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 5, ttl);
    fs::remove_file(root.join("done").join(format!("{}.json", ids[0]))).unwrap();
    let entry = fs::read_dir(root.join("expiring"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(ids[0].as_str()))
        .unwrap();
    faults.fail_at(FsOp::Remove, &entry, Fault::Eio);
    clock.advance(ttl * 2);
    let swept = store
        .sweep()
        .expect("a stale entry it cannot remove stops no sweep");
    assert_eq!(swept.deleted, 4, "{swept:?}");
    assert_eq!(common::files_in(&root, "done"), Vec::<String>::new());
    assert!(entry.exists(), "the entry it could not remove is left");
    // Once the device answers, the next sweep removes it.
    faults.disarm();
    assert_eq!(store.sweep().unwrap().deleted, 0);
    assert!(!entry.exists());
}

/// A create that fails leaves no task behind: whichever call of it fails
/// (an I/O error once, at every call in turn), no handle lists a task
/// afterwards, and the creating handle, which owns what it makes, renews
/// none. With an id the store chose, the caller could never find such a
/// task. (A failed fsync of `active/` after the rename left the task in
/// place: listed as working, and renewed by its handle for as long as it
/// lived.)
#[test]
fn a_create_that_fails_leaves_no_task_behind() {
    let mut failed = 0;
    for n in 1.. {
        assert!(n < 1_000, "the create never gets through");
        let dir = tempdir();
        let faults = FaultInjector::new();
        let s = FileStore::builder(dir.path().join("store"))
            .clock(clock())
            .fault_injector(faults.clone())
            .open()
            .unwrap();
        faults.fail_nth(n, Fault::Eio, FaultMode::Once);
        let result = s.create(NewTask::new());
        faults.disarm();
        if faults.fired().is_empty() {
            result.expect("a create without faults");
            break;
        }
        if result.is_ok() {
            continue;
        }
        failed += 1;
        let what = format!("EIO at call {n} ({:?})", faults.fired());
        assert_eq!(s.list(&ListQuery::active()).unwrap().tasks, [], "{what}");
        assert_eq!(s.renew_leases().unwrap(), 0, "{what}");
        let fresh = FileStore::open(dir.path().join("store")).unwrap();
        assert_eq!(fresh.list(&ListQuery::all()).unwrap().tasks, [], "{what}");
    }
    assert!(failed >= 3, "only {failed} creates failed");
}

/// A finished task whose file cannot be looked at for now (every `stat`
/// of it EIO) keeps its `expiring/` entry: the sweep reports it, naming
/// the file, and deletes it once the device answers. (The entry was taken
/// for stale and removed, without a word: no later sweep ever found the
/// task again.)
#[test]
fn a_finished_task_whose_file_cannot_be_looked_at_keeps_its_index_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 5, ttl);
    let file = root.join("done").join(format!("{}.json", ids[0]));
    faults.fail_at(FsOp::Stat, &file, Fault::Eio);
    clock.advance(ttl * 2);
    let swept = store.sweep().unwrap();
    assert_eq!(swept.deleted, 4, "{swept:?}");
    assert!(
        swept.missed.iter().any(|m| m.id == ids[0])
            || swept.skipped.iter().any(|s| s.id.as_ref() == Some(&ids[0])),
        "the task left is reported: {swept:?}"
    );
    assert_eq!(
        common::files_in(&root, "expiring").len(),
        1,
        "its entry stays"
    );
    faults.disarm();
    assert_eq!(store.sweep().unwrap().deleted, 1);
    assert_eq!(common::files_in(&root, "done"), Vec::<String>::new());
    assert_eq!(common::files_in(&root, "expiring"), Vec::<String>::new());
}

/// A dead writer's temp file that cannot be removed (every unlink of it
/// EIO) stops no sweep: the expired tasks are deleted all the same, and
/// the file goes once the device answers; a clean-up that fails as a whole
/// fails the sweep, but only after its batches. (Every sweep failed at the
/// clean-up, before its batches, and deleted nothing.)
#[test]
fn a_temp_file_that_cannot_be_removed_stops_no_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    common::finished_with_ttl(&store, 5, ttl);
    store.create(NewTask::new().ttl(ttl)).unwrap();
    let temp = root.join("tmp/target.999999.7.tmp");
    fs::write(&temp, b"{\"format\":1,\"ta").unwrap();
    faults.fail_at(FsOp::Remove, &temp, Fault::Eio);
    clock.advance(ttl * 2);
    for round in 0..2 {
        let swept = store
            .sweep()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(swept.deleted, if round == 0 { 6 } else { 0 }, "{swept:?}");
        assert!(temp.exists());
    }
    faults.disarm();
    assert_eq!(store.sweep().unwrap().cleaned, 1);
    assert!(!temp.exists());
    // A clean-up that fails as a whole (`tmp/` cannot be listed) is the
    // sweep's error, after its batches have deleted what expired.
    let task = store.create(NewTask::new().ttl(ttl)).unwrap();
    faults.fail_at(FsOp::ReadDir, root.join("tmp"), Fault::Eio);
    clock.advance(ttl * 2);
    let err = store.sweep().expect_err("the clean-up failed");
    assert!(err.to_string().contains("tmp"), "{err}");
    faults.disarm();
    assert_eq!(common::files_in(&root, "active"), Vec::<String>::new());
    assert_eq!(store.get(&task.id).unwrap(), None);
}

/// A compaction cut short after its swap (the fsync of the store's root
/// failed) leaves the old directory as `active.compact`: the next open
/// makes the swap durable, with an fsync of the root, before it removes
/// the leftover's names. (It removed them first: a power loss before the
/// swap was written back could leave the root naming the emptied old
/// directory, and every running task gone.)
#[test]
fn a_compaction_cut_short_is_made_durable_before_its_leftover_goes() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let Some((kept, _)) = common::grown_and_emptied(&root) else {
        return;
    };
    let faults = FaultInjector::new();
    faults.fail_at(FsOp::SyncDir, &root, Fault::Eio);
    let cut = FileStore::builder(&root)
        .fault_injector(faults.clone())
        .open();
    assert!(cut.is_err(), "the open alone failed at the root's fsync");
    drop(cut);
    assert!(
        root.join("active.compact").is_dir(),
        "the old directory is left"
    );
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let events = recorder.events();
    let root_durable = first(
        &events,
        0,
        |e| matches!(e, FsEvent::SyncDir { path } if path == &root),
    );
    let leftover_emptied = first(&events, 0, removed_from("active.compact"));
    assert!(
        root_durable < leftover_emptied,
        "the swap is durable (call {root_durable}) before the leftover's names go (call {leftover_emptied})"
    );
    assert_eq!(store.get(&kept.id).unwrap(), Some(kept));
    assert!(!root.join("active.compact").exists());
}

/// An open that is not alone (a check holds the store: `taskstore verify`
/// run after the crash) does not compact, so it leaves a cut compaction's
/// leftover for an open alone; but it makes the swap durable before it
/// writes anything into the area. (It left that to the open alone too: a
/// power loss meanwhile, on a file system that had not written the root
/// back, could put the area's name on the old directory again, and the
/// next open alone emptied the new one, with every task written since.)
#[test]
fn an_open_beside_another_makes_a_cut_compactions_swap_durable_first() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let kept = FileStore::open(&root)
        .unwrap()
        .create(NewTask::new())
        .unwrap();
    // What a compaction cut short after its swap leaves (planted by hand,
    // so that this runs on file systems whose directories shrink and are
    // never compacted): the old directory under the leftover's name.
    let leftover = root.join("active.compact");
    fs::create_dir(&leftover).unwrap();
    fs::set_permissions(
        &leftover,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let check = taskstore::FileCheck::open(&root).unwrap();
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let events = recorder.events();
    let root_durable = first(
        &events,
        0,
        |e| matches!(e, FsEvent::SyncDir { path } if path == &root),
    );
    let written = first(
        &events,
        0,
        |e| matches!(e, FsEvent::Rename { to, .. } if to.ends_with(format!("active/{}.json", task.id))),
    );
    assert!(
        root_durable < written,
        "the swap is durable (call {root_durable}) before the area is written (call {written})"
    );
    assert!(leftover.is_dir(), "the leftover is left for an open alone");
    assert_eq!(store.get(&kept.id).unwrap(), Some(kept));
    drop(check);
}

/// A task this handle cannot renew (the device fails the rename of its
/// renewed file, and only of that one) keeps none of its other tasks from
/// being renewed: the pass renews the rest, then reports the one, naming
/// its file. (The pass stopped at it, before it wrote any renewal, and
/// every lease of the handle lapsed.)
#[test]
fn a_task_that_cannot_be_renewed_keeps_no_other_from_being_renewed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    // The one that fails first in listing order, so that a pass stopping
    // at it would leave the other.
    let stuck = store.create(NewTask::new()).unwrap();
    let fine = store.create(NewTask::new()).unwrap();
    let stuck_path = root.join("active").join(format!("{}.json", stuck.id));
    faults.fail_at(FsOp::Rename, &stuck_path, Fault::Eio);
    clock.advance(Duration::from_secs(5));
    match store.renew_leases() {
        Err(taskstore::Error::Io { path, .. }) => assert_eq!(path, stuck_path),
        other => panic!("the task that failed is reported, got {other:?}"),
    }
    faults.disarm();
    let renewed = store.get(&fine.id).unwrap().unwrap();
    assert_eq!(
        renewed.lease_expires_at,
        Some(T0 + Duration::from_secs(5) + taskstore::DEFAULT_LEASE),
        "the other task is renewed"
    );
    assert_eq!(store.get(&stuck.id).unwrap(), Some(stuck), "kept as it was");
}

/// A store at `root` with handles of the instances `names` on one clock
/// and one fault injector, and a resumable task (five attempts) the first
/// made, its lease lapsed: an orphan for the others to claim.
fn an_orphan_and<const N: usize>(
    root: &Path,
    names: [&str; N],
) -> (Task, ManualClock, FaultInjector, [FileStore; N]) {
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let handles = names.map(|instance_id| {
        FileStore::builder(root)
            .clock(Arc::new(clock.clone()))
            .instance_id(instance_id)
            .fault_injector(faults.clone())
            .open()
            .unwrap()
    });
    let resumable = NewTask::new().resumable("k", json!(1)).max_attempts(5);
    let task = handles[0].create(resumable).unwrap();
    clock.advance(taskstore::DEFAULT_LEASE);
    (task, clock, faults, handles)
}

/// A claim whose write the device fails after the new version is in place
/// (the fsync of `active/` fails, its rename done) is reported missed, and
/// the task, which the store may hold as this handle's, is never renewed
/// by it: its lease lapses and another instance claims it. (The handle's
/// `renew_leases` renewed it: a task no caller knew of, kept working for
/// as long as the handle lived.) A later claim by the same handle that
/// lands is renewed as any.
#[test]
fn a_claim_that_fails_after_its_write_stands_is_never_renewed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (task, clock, faults, [dead, heir, other]) =
        an_orphan_and(&root, ["dead", "heir", "other"]);
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    let claimed = heir.claim(&["k"]).unwrap();
    faults.disarm();
    assert!(claimed.tasks.is_empty(), "{claimed:?}");
    assert_eq!(claimed.missed.len(), 1, "{claimed:?}");
    let stored = dead.get(&task.id).unwrap().unwrap();
    assert_eq!(
        (stored.owner.as_deref(), stored.epoch),
        (Some("heir"), 2),
        "the claim's version stands"
    );
    // Another's write over it (an unfenced update keeps the owner) makes
    // it no less a failed claim's.
    let update = TaskUpdate::new().status_message("seen");
    assert!(other.update(&task.id, update).unwrap().is_applied());
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(heir.renew_leases().unwrap(), 0, "not renewed by its pass");
    let of = heir.renew_leases_of(std::slice::from_ref(&task.id));
    assert!(
        matches!(of[..], [Err(Error::NotFound { .. })]),
        "nor by name: {of:?}"
    );
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(heir.renew_leases().unwrap(), 0, "nor once its lease lapsed");
    let taken = other.claim(&["k"]).unwrap();
    assert_eq!(taken.tasks.len(), 1, "{taken:?}");
    assert_eq!(taken.tasks[0].epoch, 3);
    // Left to lapse again, the same handle claims it, and renews it.
    clock.advance(taskstore::DEFAULT_LEASE);
    let again = heir.claim(&["k"]).unwrap();
    assert_eq!(again.tasks.len(), 1, "{again:?}");
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(
        heir.renew_leases().unwrap(),
        1,
        "a claim that landed is renewed"
    );
}

/// A claim that failed before its write stood (the rename of the claimed
/// version fails) leaves the task as it was; the same handle's next claim
/// of it, which writes the same revision and epoch, lands and is renewed
/// as any claim. (Kept as a failed claim's version, it would have been
/// left to lapse.)
#[test]
fn a_claim_after_a_failed_claim_of_the_same_task_is_renewed() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (task, clock, faults, [dead, heir]) = an_orphan_and(&root, ["dead", "heir"]);
    let path = root.join("active").join(format!("{}.json", task.id));
    faults.fail_at(FsOp::Rename, &path, Fault::Eio);
    let failed = heir.claim(&["k"]).unwrap();
    faults.disarm();
    assert_eq!(failed.missed.len(), 1, "{failed:?}");
    assert_eq!(dead.get(&task.id).unwrap(), Some(task.clone()), "as it was");
    clock.advance(Duration::from_secs(1));
    let claimed = heir.claim(&["k"]).unwrap();
    assert_eq!(claimed.tasks.len(), 1, "{claimed:?}");
    assert_eq!(claimed.tasks[0].epoch, 2);
    clock.advance(taskstore::DEFAULT_LEASE / 2);
    assert_eq!(
        heir.renew_leases().unwrap(),
        1,
        "the claim that landed is renewed"
    );
}

/// Renewing the leases of many tasks at once (`renew_leases_of`, what the
/// MCP manager's watch calls) makes them durable with one fsync of
/// `active/`, not one each: a manager renewing thousands of leases one by
/// one let the last of them lapse before it got to them. Shown on the
/// calls the store makes, for a batch large enough that its files are
/// written by several workers at once.
#[test]
fn renewing_many_leases_at_once_makes_them_durable_together() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let ids: Vec<TaskId> = (0..600)
        .map(|_| store.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(5));
    let from = recorder.len();
    let renewed = store.renew_leases_of(&ids);
    // One answer per id, in the order given, each that task's renewal.
    assert_eq!(renewed.len(), ids.len());
    for (id, result) in ids.iter().zip(&renewed) {
        assert!(
            matches!(result, Ok(t) if t.is_applied() && &t.task().id == id),
            "{id}: {result:?}"
        );
    }
    let syncs = |from: usize| {
        recorder.events()[from..]
            .iter()
            .filter(|e| matches!(e, FsEvent::SyncDir { path } if path.ends_with("active")))
            .count()
    };
    assert_eq!(syncs(from), 1, "one fsync of active/ for 600 renewals");
    let fresh = recorded(dir.path(), &clock, &taskstore::Recorder::new());
    for id in &ids {
        let task = fresh.get(id).unwrap().unwrap();
        assert_eq!(
            (task.lease_expires_at, task.revision),
            (
                Some(T0 + Duration::from_secs(5) + taskstore::DEFAULT_LEASE),
                2
            ),
            "{id}"
        );
    }
    // One at a time, each is made durable on its own.
    let from = recorder.len();
    for id in &ids {
        assert!(store.renew_lease(id).unwrap().is_applied());
    }
    assert_eq!(syncs(from), ids.len());
}

/// A task a reap (or a sweep, or a claim) could not handle is said in the
/// log, with its id and the error, whatever the caller keeps of the pass:
/// `reap_orphans`, which the MCP manager's loop calls, returns the tasks
/// reaped alone. (Nothing was said: the pass returned `Ok` with fewer
/// tasks, and the failures were gone.)
#[test]
fn a_task_a_reap_could_not_handle_is_said_with_its_id() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let owner = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let ids: Vec<TaskId> = (0..2)
        .map(|_| owner.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(90));
    faults.fail_at(FsOp::SyncDir, root.join("done"), Fault::Eio);
    let logged = common::Logged::default();
    let reaped = tracing::subscriber::with_default(logged.clone(), || store.reap_orphans());
    faults.disarm();
    assert_eq!(reaped.unwrap().len(), 0, "neither reap was made durable");
    for id in &ids {
        assert!(
            logged
                .warnings()
                .iter()
                .any(|w| w.field("task") == Some(id.as_str()) && w.field("error").is_some()),
            "no warning names {id}: {:?}",
            logged.warnings()
        );
    }
}

/// After an fsync of `done/` failed, a removal from it may be lost: a
/// power loss can bring the file back. So the finished tasks' `expiring/`
/// entries stay, whatever later fsyncs say (the kernel reports a failure
/// once): a task come back is still found and swept. (The next sweep's
/// retry removed them after its own fsync succeeded, and so did a later
/// sweep that found them stale: such a task would never be swept.)
#[test]
fn after_a_failed_fsync_of_done_the_index_entries_of_its_removals_stay() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&store, 3, ttl);
    clock.advance(ttl * 2);
    let entries = common::files_in(&root, "expiring");
    assert_eq!(entries.len(), 3);
    faults.fail_at(FsOp::SyncDir, root.join("done"), Fault::Eio);
    assert!(store.sweep().is_err(), "the sweep's fsync of done/ failed");
    faults.disarm();
    store.sweep().unwrap();
    store.sweep().unwrap();
    assert_eq!(common::files_in(&root, "done"), Vec::<String>::new());
    for id in &ids {
        assert_eq!(store.get(id).unwrap(), None);
    }
    assert_eq!(
        common::files_in(&root, "expiring"),
        entries,
        "the entries stay for the tasks a power loss may bring back"
    );
    // A handle opened after it (after a reboot, the files are back or
    // durably gone) finds them stale, and its sweep removes them.
    drop(store);
    let again = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    again.sweep().unwrap();
    assert_eq!(
        common::files_in(&root, "expiring"),
        Vec::<String>::new(),
        "a handle opened later removes the stale entries"
    );
}

/// A task whose create failed and could not be undone is no caller's: a
/// renewal of given leases renews it under no id it is given, given twice
/// or not, and a renewal of its lease alone does not either. (Given twice,
/// the second renewal renewed it; so did `renew_lease`.)
#[test]
fn a_failed_creates_task_is_renewed_under_no_repeated_id() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, faults) = faulted(&root);
    let id = TaskId::parse("made-and-failed").unwrap();
    let file = root.join("active").join("made-and-failed.json");
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    assert!(store.create(NewTask::new().id(id.clone())).is_err());
    faults.disarm();
    // Still not removable: the task stays, kept from renewal.
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    let mut renewed = store.renew_leases_of(&[id.clone(), id.clone()]);
    renewed.push(store.renew_lease(&id));
    faults.disarm();
    for result in renewed {
        assert!(
            matches!(result, Err(taskstore::Error::NotFound { .. })),
            "{result:?}"
        );
    }
}

/// A store opened where its parent directories do not exist yet makes them,
/// and the name of each is made durable in its own parent before `open`
/// returns, as the store's own name is: a power cut could otherwise lose a
/// directory on the way to the store, and the store with it. (Only the
/// store's own parent was fsynced.) Shown on the calls the store makes.
#[test]
fn opening_a_store_under_new_directories_makes_each_ones_name_durable() {
    use taskstore::FsEvent;
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("srv/tasks/store");
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let synced: Vec<PathBuf> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            FsEvent::SyncDir { path } => Some(path),
            _ => None,
        })
        .collect();
    for dir in [base.join("srv/tasks"), base.join("srv"), base.clone()] {
        assert!(
            synced.contains(&dir),
            "{} was not fsynced: {synced:?}",
            dir.display()
        );
    }
    assert!(store.create(NewTask::new()).is_ok());
}

/// A batch of renewals large enough to be staged on several workers, whose
/// one fsync of `active/` fails: every renewal it covered reports the
/// failure, none is acknowledged (the workers' records of what they
/// touched are one, and the failure reaches each write in it).
#[test]
fn a_failed_fsync_under_a_batch_staged_on_several_workers_fails_every_write_it_covered() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let ids: Vec<TaskId> = (0..600)
        .map(|_| store.create(NewTask::new()).unwrap().id)
        .collect();
    clock.advance(Duration::from_secs(5));
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    let renewed = store.renew_leases_of(&ids);
    faults.disarm();
    assert_eq!(renewed.len(), ids.len());
    for (id, result) in ids.iter().zip(&renewed) {
        assert!(
            matches!(result, Err(taskstore::Error::Io { .. })),
            "{id}: {result:?}"
        );
    }
}

/// A task whose create failed and could not be undone is no caller's, and a
/// renewal of every lease the handle holds passes it by as well: it keeps
/// the lease it was made with, and lapses on time. (`TaskStore::create`:
/// the store removes what the failed write may have stored "so that no task
/// is left"; what it cannot remove yet is never renewed.)
#[test]
fn a_failed_creates_task_is_not_renewed_by_a_renewal_of_every_lease() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, clock, faults) = faulted(&root);
    let id = TaskId::parse("made-and-failed").unwrap();
    let file = root.join("active").join("made-and-failed.json");
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    assert!(store.create(NewTask::new().id(id.clone())).is_err());
    faults.disarm();
    let left = store
        .get(&id)
        .unwrap()
        .expect("its removal failed: the task is still stored");
    clock.advance(Duration::from_secs(5));
    // Still not removable: the pass keeps it, and renews no lease of it.
    faults.fail_at(FsOp::Remove, &file, Fault::Eio);
    let renewed = store.renew_leases();
    faults.disarm();
    assert_eq!(renewed.unwrap(), 0, "no task of a caller's to renew");
    assert_eq!(
        store.get(&id).unwrap(),
        Some(left),
        "its lease was not renewed"
    );
}

/// A create whose id is held by a file that is no readable task fails with
/// that file's error, and leaves nothing to undo: nothing of it was
/// written, so nothing warns that it may have left its task. (The undo's
/// removal failed on the same unreadable file, and the handle warned and
/// kept the task to remove at its renewal passes; a file store's pass sets
/// the file aside, as a listing does, and PostgreSQL's read the row again
/// each time.)
#[test]
fn a_create_over_an_unreadable_file_leaves_nothing_to_undo() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, _faults) = faulted(&root);
    fs::write(root.join("active").join("held.json"), b"not a task").unwrap();
    let id = TaskId::parse("held").unwrap();
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let err = store.create(NewTask::new().id(id.clone())).unwrap_err();
        assert_eq!(store.renew_leases().unwrap(), 0);
        err
    });
    assert!(matches!(err, taskstore::Error::Corrupt { .. }), "{err:?}");
    let undo = logged.warnings_of("failed create");
    assert!(undo.is_empty(), "{undo:?}");

    // A file past any task's size (sparse: nothing is written) is no task
    // of this create's either.
    let big = fs::File::create(root.join("active").join("big.json")).unwrap();
    big.set_len(2 << 30).unwrap();
    drop(big);
    let logged = common::Logged::default();
    let err = tracing::subscriber::with_default(logged.clone(), || {
        let new = NewTask::new().id(TaskId::parse("big").unwrap());
        store.create(new).unwrap_err()
    });
    assert!(
        matches!(err, taskstore::Error::FileTooLarge { .. }),
        "{err:?}"
    );
    let undo = logged.warnings_of("failed create");
    assert!(undo.is_empty(), "{undo:?}");
}

/// A foreign name a listing moves into `quarantine/` whose leaving
/// `active/` cannot be made durable (the fsync of `active/` fails, its
/// arrival in `quarantine/` durable already) is reported as set aside,
/// with the failure: it was moved. (It was reported "left in place", kept
/// as a name left in `active/`, and forgotten by the next listing, which
/// found it gone: never said where it went.)
#[test]
fn a_set_aside_whose_fsync_fails_is_reported_as_moved_with_the_failure() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, faults) = faulted(&root);
    fs::write(root.join("active").join("notes.txt"), b"not a task").unwrap();
    faults.fail_at(FsOp::SyncDir, root.join("active"), Fault::Eio);
    let page = store.list(&ListQuery::active()).unwrap();
    faults.disarm();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    let skipped = &page.skipped[0];
    assert_eq!(skipped.action, UnreadableAction::SetAside, "{skipped:?}");
    assert!(skipped.reason.contains("fsync"), "{skipped:?}");
    assert!(!root.join("active").join("notes.txt").exists());
    assert_eq!(common::files_in(&root, "quarantine").len(), 1);
}

/// A listing that meets several names that are no task file's in
/// `active/`, and an open that meets several entries of `tmp/` that are no
/// temp file's, set them aside with one fsync of `quarantine/` for all
/// their arrivals and then one of the directory for all their leavings
/// (each made one of each per name).
#[test]
fn names_set_aside_together_share_their_fsyncs() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    drop(recorded(dir.path(), &clock, &recorder));
    for name in ["a.txt", "b.txt", "c.txt"] {
        fs::write(dir.path().join("active").join(name), b"not a task").unwrap();
        fs::write(dir.path().join("tmp").join(name), b"not a temp file").unwrap();
    }
    let synced = |from: usize, area: &str| {
        let path = dir.path().join(area);
        recorder.events()[from..]
            .iter()
            .filter(|e| matches!(e, FsEvent::SyncDir { path: p } if *p == path))
            .count()
    };
    let from = recorder.len();
    let store = recorded(dir.path(), &clock, &recorder);
    assert_eq!(common::files_in(dir.path(), "tmp"), Vec::<String>::new());
    let opened = [synced(from, "quarantine"), synced(from, "tmp")];
    let from = recorder.len();
    let page = store.list(&ListQuery::active()).unwrap();
    assert_eq!(page.skipped.len(), 3, "{:?}", page.skipped);
    assert_eq!(common::files_in(dir.path(), "quarantine").len(), 6);
    let listed = [synced(from, "quarantine"), synced(from, "active")];
    assert_eq!(
        (opened, listed),
        ([1, 1], [1, 1]),
        "fsyncs of quarantine/ and the directory left, by the open and the listing"
    );
}

/// A foreign name a listing sets aside whose arrival in `quarantine/`
/// cannot be made durable (the fsync of `quarantine/` fails) is not
/// unlinked from `active/`: it is reported left in place, with the
/// failure. It then has a name in both, as after a crash between the two
/// halves of a set-aside, and the next listing finishes the move under
/// the name it was given: set aside once, not twice. (A rename moved it
/// out of `active/` before its arrival was durable.)
#[test]
fn a_set_aside_whose_arrival_is_not_durable_is_left_and_finished_once_by_the_next_listing() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let (store, _clock, faults) = faulted(&root);
    let file = root.join("active").join("notes.txt");
    fs::write(&file, b"not a task").unwrap();
    faults.fail_at(FsOp::SyncDir, root.join("quarantine"), Fault::Eio);
    let page = store.list(&ListQuery::active()).unwrap();
    faults.disarm();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    let skipped = &page.skipped[0];
    assert_eq!(skipped.action, UnreadableAction::LeftInPlace, "{skipped:?}");
    assert!(skipped.reason.contains("fsync"), "{skipped:?}");
    assert!(file.exists());
    let quarantined = common::files_in(&root, "quarantine");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");

    let page = store.list(&ListQuery::active()).unwrap();
    assert_eq!(page.skipped.len(), 1, "{:?}", page.skipped);
    let skipped = &page.skipped[0];
    assert_eq!(skipped.action, UnreadableAction::SetAside, "{skipped:?}");
    assert!(
        skipped
            .moved_to
            .as_deref()
            .is_some_and(|to| to.ends_with(&quarantined[0])),
        "{skipped:?}"
    );
    assert!(!file.exists());
    assert_eq!(common::files_in(&root, "quarantine"), quarantined);
}

/// An `Immediate` write that keeps a finished task makes that version
/// durable once: its file, `expiring/` (with a TTL) and `done/` are
/// fsynced before the first `AlreadyTerminal` answer (another handle may have finished it
/// `Eventual`ly), and a later answer for the same version makes no fsync
/// (each made two: a retried complete, a renewal of a finished task, a
/// cancel after completion, each flushing the device again for nothing).
#[test]
fn a_finished_version_is_made_durable_once_per_handle() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let fsyncs = |from: usize| {
        recorder.events()[from..]
            .iter()
            .filter(|e| matches!(e, FsEvent::SyncFile { .. } | FsEvent::SyncDir { .. }))
            .count()
    };
    // With a TTL, its `expiring/` entry is made durable too.
    for (new, first) in [
        (NewTask::new(), 2),
        (NewTask::new().ttl(Duration::from_secs(3600)), 3),
    ] {
        let task = store.create(new).unwrap();
        assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
        let mut made = Vec::new();
        for _ in 0..3 {
            let from = recorder.len();
            let again = store.complete(&task.id, json!(2)).unwrap();
            assert!(!again.is_applied(), "{again:?}");
            made.push(fsyncs(from));
        }
        assert_eq!(made, [first, 0, 0], "fsyncs per AlreadyTerminal answer");
    }
}

/// A damaged stale copy beside a finished task (a power loss in the middle
/// of its terminal move) is set aside by the next write of the task with
/// one fsync of its directory: the set-aside makes its move durable, and
/// nothing fsyncs the directory again for it (it did, twice in all).
#[test]
fn a_damaged_stale_copy_is_set_aside_with_one_fsync_of_its_directory() {
    use taskstore::FsEvent;
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let store = recorded(dir.path(), &clock, &recorder);
    let task = store.create(NewTask::new()).unwrap();
    assert!(store.complete(&task.id, json!(1)).unwrap().is_applied());
    // Left after the open, which resolves the copies it finds.
    let stale = dir.path().join("active").join(format!("{}.json", task.id));
    fs::write(&stale, b"{damaged").unwrap();
    let from = recorder.len();
    let again = store.cancel(&task.id, None).unwrap();
    assert!(!again.is_applied(), "{again:?}");
    assert!(!stale.exists(), "set aside");
    let active = dir.path().join("active");
    let synced = recorder.events()[from..]
        .iter()
        .filter(|e| matches!(e, FsEvent::SyncDir { path } if *path == active))
        .count();
    assert_eq!(
        synced,
        1,
        "fsyncs of active/: {:?}",
        &recorder.events()[from..]
    );
}
