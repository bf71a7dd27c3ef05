//! Leases and orphan reaping.
//!
//! In one process, under a `ManualClock`, both backends: the edges of a lease
//! (just before and at its lapse), renewal, ownership, terminal tasks.
//! Across processes, on the system clock with short leases: a killed owner's
//! tasks are reaped by another process, exactly those; a live owner that
//! renews is never reaped; two reapers at once make one transition per task.
//! The cross-process tests never assert on timing: they wait for conditions
//! by polling, with a bound that only fails a hung test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{id, read_tasks, spawn, touch, wait_for, wait_until, write_atomic, write_tasks};
use serde_json::json;
use taskstore::{
    Durability, Error, FileStore, ListQuery, ManualClock, MemoryStore, NewTask, Task, TaskId,
    TaskStatus, TaskStore, TaskUpdate, Transition,
};
use time::OffsetDateTime;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);
const LEASE: Duration = Duration::from_secs(10);

/// The same scenario on both backends, each owned by instance `owner` with a
/// 10 s lease on `clock`. The temp dir keeps the file store's directory alive.
fn backends(clock: &ManualClock) -> Vec<(Box<dyn TaskStore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .lease(LEASE)
        .open()
        .unwrap();
    let memory = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .lease(LEASE)
        .build()
        .unwrap();
    vec![(Box::new(file), Some(dir)), (Box::new(memory), None)]
}

// ---------------------------------------------------------------------------
// One process, manual clock.

/// On a clock that moves between any two readings (the system's), a
/// create's lease runs from the time it stamps on the task, and a renewal
/// pass gives every task it renews one expiry: each takes one reading of
/// the clock for all it decides. (The lease was read from a second reading
/// of its own, a few microseconds later; the concurrent histories of
/// `linearizable` met it.)
#[test]
fn a_create_and_a_renewal_pass_each_go_by_one_reading_of_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .durability(Durability::Eventual)
        .lease(LEASE)
        .open()
        .unwrap();
    let memory = MemoryStore::builder().lease(LEASE).build().unwrap();
    for store in [&file as &dyn TaskStore, &memory] {
        let made: Vec<Task> = (0..20)
            .map(|_| store.create(NewTask::new()).unwrap())
            .collect();
        for task in &made {
            assert_eq!(
                task.lease_expires_at,
                Some(task.created_at + LEASE),
                "{}",
                task.id
            );
        }
        assert_eq!(store.renew_leases().unwrap(), made.len());
        let ids: Vec<TaskId> = made.iter().map(|t| t.id.clone()).collect();
        let expiries: BTreeSet<Option<OffsetDateTime>> = store
            .get_all(&ids)
            .into_iter()
            .map(|t| t.unwrap().unwrap().lease_expires_at)
            .collect();
        assert_eq!(expiries.len(), 1, "one expiry for the pass: {expiries:?}");
    }
}

#[test]
fn lease_lapses_exactly_at_its_expiry() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let t = s.create(NewTask::new()).unwrap();
        assert_eq!(t.owner.as_deref(), Some("owner"));
        assert_eq!(t.lease_expires_at, Some(T0 + LEASE));

        clock.set(T0 + LEASE - time::Duration::nanoseconds(1));
        assert_eq!(
            s.reap_orphans().unwrap(),
            vec![],
            "reaped before the lease lapsed"
        );
        assert_eq!(s.get(&t.id).unwrap(), Some(t.clone()));

        clock.set(T0 + LEASE);
        let reaped = s.reap_orphans().unwrap();
        assert_eq!(
            reaped.len(),
            1,
            "not reaped at the instant its lease lapsed"
        );
        let r = &reaped[0];
        assert_eq!(r.id, t.id);
        assert_eq!(r.status, TaskStatus::Failed);
        assert_eq!(r.revision, t.revision + 1);
        assert_eq!(r.last_updated_at, T0 + LEASE);
        assert_eq!(r.lease_expires_at, None, "a terminal task holds no lease");
        assert_eq!(
            r.owner.as_deref(),
            Some("owner"),
            "the lost owner stays on record"
        );
        let error = r.error.as_ref().unwrap();
        assert_eq!(error["code"], "orphaned");
        assert_eq!(error["owner"], "owner");
        assert_eq!(error["reapedBy"], "owner");
        assert_eq!(error["leaseExpiredAt"], "2030-01-01T00:00:10Z");
        assert_eq!(s.get(&t.id).unwrap().as_ref(), Some(r));
        assert_eq!(s.reap_orphans().unwrap(), vec![], "reaped twice");
        assert_eq!(
            s.renew_lease(&t.id).unwrap(),
            Transition::AlreadyTerminal(r.clone()),
            "a reaped task cannot be renewed back to life"
        );
    }
}

#[test]
fn renewal_bumps_revision_but_not_last_updated_at() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let t = s.create(NewTask::new()).unwrap();
        clock.set(T0 + Duration::from_secs(4));
        let Transition::Applied(r) = s.renew_lease(&t.id).unwrap() else {
            panic!("renewal not applied")
        };
        assert_eq!(r.revision, t.revision + 1);
        assert_eq!(
            r.last_updated_at, t.last_updated_at,
            "a client sees no change"
        );
        assert_eq!(
            r.lease_expires_at,
            Some(T0 + Duration::from_secs(4) + LEASE)
        );
        assert_eq!(s.get(&t.id).unwrap(), Some(r.clone()));

        // The old lapse time passes harmlessly; the new one counts.
        clock.set(T0 + LEASE);
        assert_eq!(s.reap_orphans().unwrap(), vec![]);
        clock.set(T0 + Duration::from_secs(4) + LEASE);
        assert_eq!(s.reap_orphans().unwrap().len(), 1);
    }
}

#[test]
fn renew_leases_renews_every_running_task_of_this_instance() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let a = s.create(NewTask::new()).unwrap();
        let b = s.create(NewTask::new()).unwrap();
        let done = s.create(NewTask::new()).unwrap();
        let done = s.complete(&done.id, json!(1)).unwrap().into_task();
        let _ = s
            .update(&b.id, TaskUpdate::new().status(TaskStatus::InputRequired))
            .unwrap();
        clock.set(T0 + Duration::from_secs(9));
        assert_eq!(s.renew_leases().unwrap(), 2);
        clock.set(T0 + Duration::from_secs(15));
        assert_eq!(
            s.reap_orphans().unwrap(),
            vec![],
            "renewed tasks were reaped"
        );
        assert_eq!(
            s.get(&done.id).unwrap(),
            Some(done.clone()),
            "a terminal task was touched"
        );
        for id in [&a.id, &b.id] {
            let t = s.get(id).unwrap().unwrap();
            assert_eq!(
                t.lease_expires_at,
                Some(T0 + Duration::from_secs(9) + LEASE)
            );
        }
    }
}

#[test]
fn terminal_tasks_hold_no_lease() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let finished = [
            s.create(NewTask::new()).unwrap(),
            s.create(NewTask::new()).unwrap(),
            s.create(NewTask::new()).unwrap(),
        ];
        let finished = [
            s.complete(&finished[0].id, json!("r")).unwrap(),
            s.fail(&finished[1].id, json!("e")).unwrap(),
            s.cancel(&finished[2].id, None).unwrap(),
        ]
        .map(Transition::into_task);
        clock.set(T0 + LEASE * 100);
        assert_eq!(s.reap_orphans().unwrap(), vec![]);
        for t in &finished {
            assert_eq!(t.lease_expires_at, None);
            assert_eq!(
                s.renew_lease(&t.id).unwrap(),
                Transition::AlreadyTerminal(t.clone())
            );
            assert_eq!(s.get(&t.id).unwrap().as_ref(), Some(t));
        }
        assert_eq!(s.renew_leases().unwrap(), 0);
    }
}

#[test]
fn expired_tasks_are_not_reaped() {
    let clock = ManualClock::new(T0);
    for (s, _dir) in backends(&clock) {
        clock.set(T0);
        let t = s
            .create(NewTask::new().ttl(Duration::from_secs(5)))
            .unwrap();
        clock.set(T0 + LEASE);
        assert_eq!(s.reap_orphans().unwrap(), vec![]);
        assert!(matches!(s.renew_lease(&t.id), Err(Error::NotFound { .. })));
    }
}

/// The largest orphan error there can be: a 128-character task id, owner
/// and reaper instance ids of 256 bytes that JSON escapes to 512, a
/// resumable task's attempt counts at their maximum, timestamps with every
/// digit. A task at the payload cap with all of that is still reaped whole,
/// within the cap plus `OWN_HEADROOM`, on both backends.
#[test]
fn a_reaped_orphan_at_the_cap_keeps_everything() {
    let owner = "\"".repeat(taskstore::MAX_INSTANCE_ID_LEN);
    let reaper = "\\".repeat(taskstore::MAX_INSTANCE_ID_LEN);
    let start = T0 + Duration::from_nanos(123_456_789);
    let clock = ManualClock::new(start);
    let cap = taskstore::MIN_MAX_PAYLOAD_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let file = |instance: &str| -> Box<dyn TaskStore> {
        Box::new(
            FileStore::builder(dir.path())
                .clock(Arc::new(clock.clone()))
                .instance_id(instance)
                .lease(LEASE)
                .max_payload_bytes(cap)
                .open()
                .unwrap(),
        )
    };
    let shared = taskstore::MemoryBackend::new();
    let memory = |instance: &str| -> Box<dyn TaskStore> {
        Box::new(
            taskstore::Store::with_backend(shared.clone())
                .clock(Arc::new(clock.clone()))
                .instance_id(instance)
                .lease(LEASE)
                .max_payload_bytes(cap)
                .build()
                .unwrap(),
        )
    };
    let pairs = [
        (file(&owner), file(&reaper)),
        (memory(&owner), memory(&reaper)),
    ];
    for (n, (a, b)) in pairs.iter().enumerate() {
        clock.set(start);
        let new = || {
            let tag = format!("{n}-");
            NewTask::new()
                .id(TaskId::parse(&format!("{tag}{}", "x".repeat(128 - tag.len()))).unwrap())
                .resumable("k", json!(null))
                .max_attempts(u32::MAX)
                .status_message("s")
        };
        // Fill the metadata to the byte where one more is refused.
        let probe = a.create(new().metadata("m", "")).unwrap();
        let room = cap - serde_json::to_vec(&probe).unwrap().len();
        assert!(a.delete(&probe.id).unwrap());
        let task = a.create(new().metadata("m", "y".repeat(room))).unwrap();
        assert_eq!(serde_json::to_vec(&task).unwrap().len(), cap);

        // Past the lease and the claim grace: nobody resumed it.
        clock.set(start + LEASE * 3);
        let reaped = b.reap().unwrap();
        assert!(reaped.missed.is_empty(), "{:?}", reaped.missed);
        assert_eq!(reaped.tasks.len(), 1);
        let orphan = &reaped.tasks[0];
        assert_eq!(orphan.status, TaskStatus::Failed);
        assert_eq!(orphan.metadata, task.metadata);
        assert_eq!(orphan.status_message, task.status_message);
        let error = orphan.error.as_ref().unwrap();
        assert_eq!(error["owner"], owner.as_str());
        assert_eq!(error["reapedBy"], reaper.as_str());
        assert_eq!(error["maxAttempts"], u32::MAX);
        let error_size = serde_json::to_vec(error).unwrap().len();
        assert!(error_size < 2048, "the orphan error is {error_size} bytes");
        let size = serde_json::to_vec(orphan).unwrap().len();
        assert!(size <= cap + taskstore::OWN_HEADROOM, "{size} bytes");
        assert_eq!(a.get(&task.id).unwrap().as_ref(), Some(orphan));
    }
}

/// Two handles on one store directory: instances `a` and `b`.
fn two_instances(clock: &ManualClock) -> (tempfile::TempDir, FileStore, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let open = |instance: &str| {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .lease(LEASE)
            .open()
            .unwrap()
    };
    let (a, b) = (open("a"), open("b"));
    (dir, a, b)
}

#[test]
fn only_the_owner_renews() {
    let clock = ManualClock::new(T0);
    let (_dir, a, b) = two_instances(&clock);
    let t = a.create(NewTask::new()).unwrap();
    clock.set(T0 + Duration::from_secs(3));
    match b.renew_lease(&t.id) {
        Err(Error::NotOwner { id, owner }) => {
            assert_eq!(id, t.id);
            assert_eq!(owner.as_deref(), Some("a"));
        }
        other => panic!("renewal by a non-owner: {other:?}"),
    }
    assert_eq!(b.renew_leases().unwrap(), 0, "b owns nothing");
    assert_eq!(
        a.get(&t.id).unwrap(),
        Some(t.clone()),
        "a refused renewal changed the task"
    );
    let missing = TaskId::parse("missing").unwrap();
    assert!(matches!(
        b.renew_lease(&missing),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        a.renew_lease(&missing),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn writes_by_the_owner_renew_its_lease_and_others_do_not() {
    let clock = ManualClock::new(T0);
    let (_dir, a, b) = two_instances(&clock);
    let t = a.create(NewTask::new()).unwrap();
    clock.set(T0 + Duration::from_secs(3));
    let by_b = b
        .update(&t.id, TaskUpdate::new().status_message("from b"))
        .unwrap()
        .into_task();
    assert_eq!(by_b.owner.as_deref(), Some("a"));
    assert_eq!(by_b.lease_expires_at, t.lease_expires_at);
    clock.set(T0 + Duration::from_secs(6));
    let by_a = a
        .update(&t.id, TaskUpdate::new().status_message("from a"))
        .unwrap()
        .into_task();
    assert_eq!(
        by_a.lease_expires_at,
        Some(T0 + Duration::from_secs(6) + LEASE)
    );
    // b reaps nothing while a's lease holds, and a's task once it lapses.
    clock.set(T0 + Duration::from_secs(6) + LEASE - time::Duration::nanoseconds(1));
    assert_eq!(b.reap_orphans().unwrap(), vec![]);
    clock.set(T0 + Duration::from_secs(6) + LEASE);
    let reaped = b.reap_orphans().unwrap();
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].error.as_ref().unwrap()["owner"], "a");
    assert_eq!(reaped[0].error.as_ref().unwrap()["reapedBy"], "b");
    assert_eq!(a.get(&t.id).unwrap().as_ref(), Some(&reaped[0]));
}

#[test]
fn owner_finishing_and_reaper_race_first_writer_wins() {
    const N: usize = 200;
    let clock = ManualClock::new(T0);
    let (_dir, owner, reaper) = two_instances(&clock);
    let tasks: Vec<Task> = (0..N)
        .map(|_| owner.create(NewTask::new()).unwrap())
        .collect();
    // The owner stalled past its lease and now completes while b reaps.
    clock.set(T0 + LEASE);
    let barrier = std::sync::Barrier::new(2);
    let (completed, reaped) = std::thread::scope(|scope| {
        let finishing = scope.spawn(|| {
            barrier.wait();
            tasks
                .iter()
                .rev()
                .filter_map(|t| match owner.complete(&t.id, json!("done")).unwrap() {
                    Transition::Applied(t) => Some(t),
                    Transition::AlreadyTerminal(_) => None,
                    other => panic!("unfenced, never {other:?}"),
                })
                .collect::<Vec<_>>()
        });
        let reaping = scope.spawn(|| {
            barrier.wait();
            let mut reaped = Vec::new();
            while reaped.len()
                + owner
                    .list(&ListQuery::all())
                    .unwrap()
                    .tasks
                    .iter()
                    .filter(|t| t.status == TaskStatus::Completed)
                    .count()
                < N
            {
                reaped.extend(reaper.reap_orphans().unwrap());
            }
            reaped
        });
        (finishing.join().unwrap(), reaping.join().unwrap())
    });
    assert_eq!(completed.len() + reaped.len(), N, "one transition per task");
    for t in completed.iter().chain(&reaped) {
        assert_eq!(
            owner.get(&t.id).unwrap().as_ref(),
            Some(t),
            "{} changed after its first terminal write",
            t.id
        );
    }
    eprintln!(
        "owner completed {}, reaper reaped {}",
        completed.len(),
        reaped.len()
    );
}

// ---------------------------------------------------------------------------
// Several processes, system clock, short leases.

/// A lease short enough to lapse quickly in a test.
const SHORT_LEASE: Duration = Duration::from_millis(300);

fn open(store: &Path, instance: &str, lease: Duration) -> FileStore {
    FileStore::builder(store)
        .instance_id(instance)
        .lease(lease)
        .open()
        .expect("open the store")
}

fn child_args(store: &Path, work: &Path, rest: &[&str]) -> Vec<String> {
    let mut v = vec![store.display().to_string(), work.display().to_string()];
    v.extend(rest.iter().map(|s| s.to_string()));
    v
}

fn dirs(args: &[String]) -> (PathBuf, PathBuf) {
    (PathBuf::from(&args[0]), PathBuf::from(&args[1]))
}

/// Whether none of `ids` is still running.
fn none_running(s: &FileStore, ids: &[TaskId]) -> bool {
    ids.iter().all(|id| {
        s.get(id)
            .unwrap()
            .is_none_or(|t: Task| t.status.is_terminal())
    })
}

const DOOMED: usize = 20;

#[test]
fn killed_owner_is_reaped_by_another_process() {
    if let Some((role, args)) = common::role() {
        let (store, work) = dirs(&args);
        return match role.as_str() {
            "owner" => {
                let s = open(&store, "doomed", SHORT_LEASE);
                for i in 0..DOOMED {
                    s.create(NewTask::new().id(id("doomed", i))).unwrap();
                }
                for i in 0..5 {
                    s.create(NewTask::new().id(id("doomed-done", i))).unwrap();
                    let _ = s.complete(&id("doomed-done", i), json!(i)).unwrap();
                }
                touch(&work.join("ready"));
                loop {
                    // A live owner: renews until it is killed.
                    assert_eq!(s.renew_leases().unwrap(), DOOMED);
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            "reaper" => {
                let s = open(&store, "reaper", SHORT_LEASE);
                let doomed: Vec<TaskId> = (0..DOOMED).map(|i| id("doomed", i)).collect();
                let mut reaped = Vec::new();
                wait_until("the dead owner's tasks to be reaped", || {
                    reaped.extend(s.reap_orphans().unwrap());
                    none_running(&s, &doomed)
                });
                write_tasks(&work.join("reaped.jsonl"), &reaped);
            }
            other => panic!("unknown role {other}"),
        };
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let test = "killed_owner_is_reaped_by_another_process";
    // Tasks of a live instance with the default (30 s) lease: never reaped here.
    let bystander = FileStore::builder(&store)
        .instance_id("bystander")
        .open()
        .unwrap();
    let bystanders: Vec<Task> = (0..5)
        .map(|i| {
            bystander
                .create(NewTask::new().id(id("bystander", i)))
                .unwrap()
        })
        .collect();

    let owner = spawn(&work, test, "owner", &child_args(&store, &work, &[]));
    let mut owner = [owner];
    wait_for(&mut owner, "the owner's tasks", || {
        work.join("ready").exists()
    });
    let [owner] = owner;
    owner.kill();
    let finished: Vec<Task> = (0..5)
        .map(|i| bystander.get(&id("doomed-done", i)).unwrap().unwrap())
        .collect();

    spawn(&work, test, "reaper", &child_args(&store, &work, &[])).finish();
    let reaped = read_tasks(&work.join("reaped.jsonl"));
    let ids: BTreeSet<TaskId> = reaped.iter().map(|t| t.id.clone()).collect();
    let expected: BTreeSet<TaskId> = (0..DOOMED).map(|i| id("doomed", i)).collect();
    assert_eq!(ids, expected, "exactly the dead owner's running tasks");
    assert_eq!(reaped.len(), DOOMED, "each reaped once");
    for t in &reaped {
        assert_eq!(t.status, TaskStatus::Failed);
        let e = t.error.as_ref().unwrap();
        assert_eq!(
            (&e["code"], &e["owner"], &e["reapedBy"]),
            (&json!("orphaned"), &json!("doomed"), &json!("reaper"))
        );
        assert_eq!(t.lease_expires_at, None);
        assert_eq!(bystander.get(&t.id).unwrap().as_ref(), Some(t));
    }
    for t in bystanders.iter().chain(&finished) {
        assert_eq!(
            bystander.get(&t.id).unwrap().as_ref(),
            Some(t),
            "{} was touched",
            t.id
        );
    }
}

const RENEWED: usize = 20;
/// Long enough that only a process frozen for seconds misses a renewal.
const RENEWER_LEASE: Duration = Duration::from_secs(3);

#[test]
fn renewing_owner_is_never_reaped() {
    if let Some((role, args)) = common::role() {
        let (store, work) = dirs(&args);
        let stop = work.join("stop");
        return match role.as_str() {
            "renewer" => {
                let s = FileStore::builder(&store)
                    .instance_id("alive")
                    .lease(RENEWER_LEASE)
                    .durability(Durability::Eventual)
                    .open()
                    .unwrap();
                let created: Vec<Task> = (0..RENEWED)
                    .map(|i| s.create(NewTask::new().id(id("alive", i))).unwrap())
                    .collect();
                write_tasks(&work.join("created.jsonl"), &created);
                while !stop.exists() {
                    assert_eq!(s.renew_leases().unwrap(), RENEWED, "a task was reaped");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            "reaper" => {
                let s = open(&store, "reaper", RENEWER_LEASE);
                let mut passes = 0u64;
                while !stop.exists() {
                    let reaped = s.reap_orphans().unwrap();
                    assert_eq!(reaped, vec![], "reaped a live owner's tasks");
                    passes += 1;
                    write_atomic(&work.join("passes"), passes.to_string().as_bytes());
                }
            }
            other => panic!("unknown role {other}"),
        };
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let test = "renewing_owner_is_never_reaped";
    let renewer = spawn(&work, test, "renewer", &child_args(&store, &work, &[]));
    let mut children = vec![renewer];
    wait_for(&mut children, "the renewer's tasks", || {
        work.join("created.jsonl").exists()
    });
    let created = read_tasks(&work.join("created.jsonl"));
    children.push(spawn(
        &work,
        test,
        "reaper",
        &child_args(&store, &work, &[]),
    ));
    // Run until every original lease has lapsed by a full lease more, so that
    // without renewals each task would have been reaped.
    let horizon = created
        .iter()
        .filter_map(|t| t.lease_expires_at)
        .max()
        .unwrap()
        + RENEWER_LEASE;
    wait_for(&mut children, "the original leases to lapse", || {
        OffsetDateTime::now_utc() > horizon
    });
    let passes = || -> u64 {
        fs::read_to_string(work.join("passes"))
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    let seen = passes();
    wait_for(&mut children, "more reaper passes", || passes() >= seen + 3);
    touch(&work.join("stop"));
    for c in children {
        c.finish();
    }

    let s = open(&store, "checker", RENEWER_LEASE);
    for c in &created {
        let t = s.get(&c.id).unwrap().unwrap();
        assert_eq!(t.status, TaskStatus::Working, "{} was reaped", t.id);
        assert_eq!(t.owner.as_deref(), Some("alive"));
        assert!(t.revision > c.revision, "{} was never renewed", t.id);
        assert!(t.lease_expires_at > c.lease_expires_at);
    }
}

const ORPHANS: usize = 200;

#[test]
fn two_reapers_make_one_transition_per_task() {
    if let Some((role, args)) = common::role() {
        let (store, work) = dirs(&args);
        return match role.as_str() {
            "owner" => {
                let s = FileStore::builder(&store)
                    .instance_id("gone")
                    .lease(SHORT_LEASE)
                    .durability(Durability::Eventual)
                    .open()
                    .unwrap();
                for i in 0..ORPHANS {
                    s.create(NewTask::new().id(id("orphan", i))).unwrap();
                }
                // Exits without renewing: every lease lapses on its own.
            }
            "reaper" => {
                let k = &args[2];
                let s = open(&store, &format!("reaper-{k}"), SHORT_LEASE);
                let orphans: Vec<TaskId> = (0..ORPHANS).map(|i| id("orphan", i)).collect();
                touch(&work.join(format!("ready-{k}")));
                wait_until("go", || work.join("go").exists());
                let mut reaped = Vec::new();
                wait_until("every orphan to be reaped", || {
                    reaped.extend(s.reap_orphans().unwrap());
                    s.list(&ListQuery::active()).unwrap().tasks.is_empty()
                        && none_running(&s, &orphans)
                });
                write_tasks(&work.join(format!("reaped-{k}.jsonl")), &reaped);
            }
            other => panic!("unknown role {other}"),
        };
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let test = "two_reapers_make_one_transition_per_task";
    let mut reapers: Vec<_> = ["0", "1"]
        .iter()
        .map(|k| spawn(&work, test, "reaper", &child_args(&store, &work, &[k])))
        .collect();
    spawn(&work, test, "owner", &child_args(&store, &work, &[])).finish();
    wait_for(&mut reapers, "both reapers", || {
        work.join("ready-0").exists() && work.join("ready-1").exists()
    });
    // The reapers start while the leases are still running out.
    touch(&work.join("go"));
    for r in reapers {
        r.finish();
    }

    let s = open(&store, "checker", SHORT_LEASE);
    let mut by: BTreeMap<TaskId, String> = BTreeMap::new();
    for k in ["0", "1"] {
        for t in read_tasks(&work.join(format!("reaped-{k}.jsonl"))) {
            assert_eq!(
                s.get(&t.id).unwrap().as_ref(),
                Some(&t),
                "the reaped version is final"
            );
            assert_eq!(
                t.error.as_ref().unwrap()["reapedBy"],
                json!(format!("reaper-{k}"))
            );
            if let Some(other) = by.insert(t.id.clone(), k.to_owned()) {
                panic!("{} reaped by reaper {other} and reaper {k}", t.id);
            }
        }
    }
    assert_eq!(by.len(), ORPHANS, "every orphan reaped exactly once");
    eprintln!(
        "reaper 0 took {}, reaper 1 took {}",
        by.values().filter(|k| *k == "0").count(),
        by.values().filter(|k| *k == "1").count()
    );
}

/// An orphan whose owner epoch is at its highest (written outside the
/// crate: no count of claims gets there) cannot get a new epoch: a claim
/// passes it by, and a reap fails it once its claim grace is over. (A claim
/// left the epoch as it was, so the old owner's fenced writes still
/// passed the fence.)
#[test]
fn an_orphan_at_the_highest_epoch_is_never_claimed() {
    let clock = ManualClock::new(T0);
    let (dir, owner, heir) = two_instances(&clock);
    let task = owner
        .create(NewTask::new().resumable("job", json!({})))
        .unwrap();
    let file = dir.path().join("active").join(format!("{}.json", task.id));
    let mut stored: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    stored["task"]["epoch"] = json!(u64::MAX);
    write_atomic(&file, &serde_json::to_vec(&stored).unwrap());
    clock.advance(LEASE);
    assert!(
        heir.claim(&["job"]).unwrap().tasks.is_empty(),
        "not claimed"
    );
    let kept = heir.get(&task.id).unwrap().unwrap();
    assert_eq!((kept.owner.as_deref(), kept.epoch), (Some("a"), u64::MAX));
    // Past the claim grace (one lease by default): failed as orphaned.
    clock.advance(LEASE);
    let reaped = heir.reap_orphans().unwrap();
    assert_eq!(reaped.len(), 1, "reaped once its claim grace is over");
    assert_eq!(reaped[0].status, TaskStatus::Failed);
}

/// A host's clock that reads in another offset than UTC.
#[derive(Debug)]
struct TwoHoursEast(ManualClock);

impl taskstore::Clock for TwoHoursEast {
    fn now(&self) -> OffsetDateTime {
        self.0.now().to_offset(time::macros::offset!(+2))
    }
}

/// A task's times are in UTC (the wire form's `Z`) whatever offset the
/// host's clock reads in. (They came out in the clock's, `+02:00`.)
#[test]
fn a_tasks_times_are_in_utc_whatever_the_clocks_offset() {
    let store = MemoryStore::builder()
        .clock(Arc::new(TwoHoursEast(ManualClock::new(T0))))
        .lease(LEASE)
        .build()
        .unwrap();
    let task = store.create(NewTask::new()).unwrap();
    let wire = serde_json::to_value(&task).unwrap();
    for field in ["createdAt", "lastUpdatedAt", "leaseExpiresAt"] {
        let at = wire[field].as_str().unwrap();
        assert!(at.ends_with('Z'), "{field}: {at}");
    }
    assert_eq!(task.created_at, T0);
    assert_eq!(store.now().offset(), time::UtcOffset::UTC);
    // A clock at the last instant of year 9999 in an offset west of UTC
    // reads past what UTC can hold: the store takes the last instant UTC
    // holds, a time it can write and read back (kept as it was, it made
    // tasks whose listing cursor the store then refused as out of the
    // range of dates, and `ManualClock` panicked on it).
    let west = time::macros::datetime!(9999-12-31 23:59:59.999_999_999 -01:00);
    let utc_end = time::PrimitiveDateTime::MAX.assume_utc();
    #[derive(Debug)]
    struct West;
    impl taskstore::Clock for West {
        fn now(&self) -> OffsetDateTime {
            time::macros::datetime!(9999-12-31 23:59:59.999_999_999 -01:00)
        }
    }
    let memory = MemoryStore::builder()
        .clock(Arc::new(West))
        .build()
        .unwrap();
    assert_eq!(memory.now(), utc_end);
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .clock(Arc::new(West))
        .open()
        .unwrap();
    for store in [&memory as &dyn TaskStore, &file] {
        let mut made: Vec<TaskId> = (0..2)
            .map(|_| store.create(NewTask::new()).unwrap().id)
            .collect();
        made.sort();
        let first = store.list(&ListQuery::all().limit(1)).unwrap();
        let cursor = first.next_cursor.expect("a second page");
        let second = store
            .list(&ListQuery::all().limit(1).after(&cursor))
            .unwrap_or_else(|e| panic!("the cursor it handed out: {e}"));
        let mut listed: Vec<TaskId> = first
            .tasks
            .iter()
            .chain(&second.tasks)
            .map(|t| t.id.clone())
            .collect();
        listed.sort();
        assert_eq!(listed, made);
        assert_eq!(store.get(&made[0]).unwrap().unwrap().created_at, utc_end);
    }
    assert_eq!(taskstore::Clock::now(&ManualClock::new(west)), utc_end);
    let clock = ManualClock::new(T0);
    clock.set(west);
    assert_eq!(taskstore::Clock::now(&clock), utc_end);
}

/// The reaper's dry run judges by the reaper's rules: an expired task is
/// gone for every reader, so it is no orphan, however long ago its lease
/// lapsed. (`Store::orphans`: "every live running task whose lease has
/// lapsed"; `Orphan::judge`: "`None` unless it is a live running task whose
/// lease has lapsed".)
#[test]
fn an_expired_task_is_no_orphan_in_the_dry_run() {
    let clock = ManualClock::new(T0);
    let dir = tempfile::tempdir().unwrap();
    let file = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .lease(LEASE)
        .open()
        .unwrap();
    let memory = MemoryStore::builder()
        .clock(Arc::new(clock.clone()))
        .lease(LEASE)
        .build()
        .unwrap();
    type Orphans<'a> = &'a dyn Fn() -> Vec<taskstore::Orphan>;
    let stores: [(&dyn TaskStore, Orphans<'_>); 2] = [
        (&file, &|| file.orphans().unwrap()),
        (&memory, &|| memory.orphans().unwrap()),
    ];
    for (store, orphans) in stores {
        let live = store.create(NewTask::new()).unwrap();
        let expiring = store.create(NewTask::new().ttl(2 * LEASE)).unwrap();
        clock.advance(2 * LEASE);
        let judged: Vec<TaskId> = orphans().into_iter().map(|o| o.task.id).collect();
        assert_eq!(
            judged,
            vec![live.id.clone()],
            "the expired task is no orphan"
        );
        assert_eq!(taskstore::Orphan::judge(expiring, file.now(), LEASE), None);
        // The pass itself agrees: it fails the live orphan only.
        let reaped: Vec<TaskId> = store
            .reap()
            .unwrap()
            .tasks
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(reaped, vec![live.id]);
    }
}

/// An owner stopped (`SIGSTOP`) while it holds a task's stripe lock keeps
/// it (the kernel frees a dead process's lock, not a stopped one's): once
/// its leases lapsed, another process's reap waits for that stripe its
/// handle's `stripe_wait` at most, reports that stripe's tasks missed,
/// naming the lock, and reaps every other. (The reap waited on the lock
/// for as long as the owner stayed stopped.)
#[test]
fn an_owner_stopped_holding_a_stripe_lock_is_reaped_but_for_that_stripe() {
    const TASKS: usize = 64;
    let test = "an_owner_stopped_holding_a_stripe_lock_is_reaped_but_for_that_stripe";
    if let Some((_, args)) = common::role() {
        let (store, work) = dirs(&args);
        let s = open(&store, "stopped", SHORT_LEASE);
        let ids: Vec<TaskId> = (0..TASKS).map(|i| id("stopped", i)).collect();
        for i in &ids {
            s.create(NewTask::new().id(i.clone())).unwrap();
        }
        touch(&work.join("ready"));
        // Writes until stopped, and then killed.
        loop {
            for i in &ids {
                let _ = s.update(i, TaskUpdate::new().metadata("n", 1));
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let mut owner = spawn(&work, test, "owner", &child_args(&store, &work, &[]));
    let pid = owner.child.id().to_string();
    wait_until("the owner's tasks", || work.join("ready").exists());
    // The `flock` the owner holds, from `/proc/locks`: "1: FLOCK ADVISORY
    // WRITE <pid> <dev>:<inode> 0 EOF" (a waiter's line has "->" second).
    let held = || {
        fs::read_to_string("/proc/locks")
            .unwrap()
            .lines()
            .find_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                (f.len() > 4 && f[1] == "FLOCK" && f[3] == "WRITE" && f[4] == pid)
                    .then(|| line.to_owned())
            })
    };
    let signal = |sig: &str| {
        let sent = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    // The stripe whose lock file has the inode a `/proc/locks` line names.
    let ids: Vec<TaskId> = (0..TASKS).map(|i| id("stopped", i)).collect();
    let stripe_of = |line: &str| {
        let inode: u64 = line
            .split_whitespace()
            .nth(5)?
            .rsplit(':')
            .next()?
            .parse()
            .ok()?;
        ids.iter().find_map(|id| {
            let lock = common::stripe_lock(&store, id.as_str());
            use std::os::unix::fs::MetadataExt;
            (fs::metadata(&lock).ok()?.ino() == inode).then(|| common::stripe(id.as_str()))
        })
    };
    // Stopped where it holds a stripe: tried until the stop lands there.
    let trying = std::time::Instant::now();
    let (lock, held_stripe) = loop {
        owner.check_alive();
        assert!(
            trying.elapsed() < common::HANG,
            "never stopped holding a stripe"
        );
        if held().is_none() {
            continue;
        }
        signal("-STOP");
        wait_until("the owner to stop", || {
            fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('T')
            })
        });
        match held().and_then(|line| Some((stripe_of(&line)?, line))) {
            Some((stripe, line)) => break (line, stripe),
            None => signal("-CONT"),
        }
    };
    // Its leases lapse.
    std::thread::sleep(SHORT_LEASE * 3);
    let reaper = Arc::new(
        FileStore::builder(&store)
            .instance_id("reaper")
            .lease(Duration::from_secs(30))
            .stripe_wait(Duration::from_millis(200))
            .open()
            .unwrap(),
    );
    let (sent, reaped) = std::sync::mpsc::channel();
    let reaping = Arc::clone(&reaper);
    std::thread::spawn(move || {
        let _ = sent.send(reaping.reap());
    });
    let reaped = reaped.recv_timeout(common::HANG);
    owner.kill();
    let reaped = reaped
        .unwrap_or_else(|_| panic!("the reap waited on the stopped owner's {lock:?}"))
        .unwrap();
    let in_stripe = |id: &TaskId| common::stripe(id.as_str()) == held_stripe;
    let mut missed: Vec<&TaskId> = reaped.missed.iter().map(|m| &m.id).collect();
    let mut want: Vec<&TaskId> = ids.iter().filter(|id| in_stripe(id)).collect();
    missed.sort();
    want.sort();
    assert_eq!(missed, want, "the held stripe's tasks are missed ({lock})");
    assert_eq!(
        reaped.tasks.len(),
        TASKS - want.len(),
        "every other is reaped"
    );
    assert!(reaped.tasks.iter().all(|t| !in_stripe(&t.id)));
    for missed in &reaped.missed {
        let said = missed.error.to_string();
        assert!(
            said.contains("locks/") && said.contains("held it"),
            "{said}"
        );
    }
    // The owner gone (killed above), its lock with it: the stripe is taken
    // again, and the next reap reaps the rest.
    let rest = reaper.reap().unwrap();
    let mut reaped: Vec<&TaskId> = rest.tasks.iter().map(|t| &t.id).collect();
    reaped.sort();
    assert_eq!(reaped, want, "{:?}", rest.missed);
}

/// A process stopped while it holds every stripe (a sweep stopped in the
/// middle of a chunk it removes under all of them) costs a pass that meets
/// all of them one `stripe_wait`, not one for each: once a wait of the pass
/// ran out, it tries the other stripes held for moments only. A reap (in a
/// process of its own, whose threads alone are counted) of one orphan in
/// each stripe reports all 64 missed, having given up one wait (each wait
/// given up leaves its thread behind, counted while the holder is still
/// stopped). (It waited its whole `stripe_wait` for each: 64 waits, 32
/// minutes at the default.)
#[cfg(target_os = "linux")]
#[test]
fn a_pass_beside_a_process_stopped_under_every_stripe_waits_once() {
    let test = "a_pass_beside_a_process_stopped_under_every_stripe_waits_once";
    common::hold_locks_if_the_holder();
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "reap");
        let reaper = FileStore::builder(&args[0])
            .instance_id("reaper")
            .stripe_wait(Duration::from_secs(1))
            .open()
            .unwrap();
        let reaped = reaper.reap().unwrap();
        let waits = common::stripe_waits_of(std::process::id());
        write_atomic(
            Path::new(&args[1]),
            format!("{} {waits}", reaped.missed.len()).as_bytes(),
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let ids: Vec<TaskId> = (0..64)
        .map(|stripe| common::id_in_stripe("orphan", stripe))
        .collect();
    {
        let gone = FileStore::builder(&store)
            .instance_id("gone")
            .lease(SHORT_LEASE)
            .open()
            .unwrap();
        for id in &ids {
            gone.create(NewTask::new().id(id.clone())).unwrap();
        }
    }
    // Their leases lapse.
    std::thread::sleep(SHORT_LEASE * 3);
    let locks: Vec<_> = ids
        .iter()
        .map(|id| common::stripe_lock(&store, id.as_str()))
        .collect();
    let holder = common::stopped_holder(test, tmp.path(), &locks);
    let said = tmp.path().join("reaped");
    let args = [store.display().to_string(), said.display().to_string()];
    spawn(tmp.path(), test, "reap", &args).finish();
    assert!(common::is_stopped(holder.child.id()));
    holder.kill();
    let said = fs::read_to_string(&said).unwrap();
    assert_eq!(said, "64 1", "tasks missed, then stripe waits given up");
}

/// An owner and a peer on one store and `clock`, and two of the owner's
/// running tasks, in stripes 7 and 33.
fn two_leases_in_two_stripes(
    store: &Path,
    clock: &ManualClock,
) -> (FileStore, FileStore, [TaskId; 2]) {
    let open = |instance: &str| {
        FileStore::builder(store)
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .stripe_wait(Duration::from_millis(500))
            .open()
            .unwrap()
    };
    let (owner, peer) = (open("owner"), open("peer"));
    let ids = [common::id_in_stripe("a", 7), common::id_in_stripe("b", 33)];
    for id in &ids {
        owner.create(NewTask::new().id(id.clone())).unwrap();
    }
    (owner, peer, ids)
}

/// A renewal of several leases held up by one stripe a stopped process
/// holds renews the others first: the task of a free stripe is renewed
/// while the renewal waits for the held one (its lease moved on, and a
/// peer's reap meanwhile, past the old lease, leaves it alone). (The batch
/// took the stripes in turn, and the free one's renewal waited with the
/// held one's: with the default 30 s `stripe_wait`, as long as the
/// default lease, and a peer reaped it.)
#[cfg(target_os = "linux")]
#[test]
fn a_renewal_held_up_by_one_stopped_stripe_renews_the_others_first() {
    let test = "a_renewal_held_up_by_one_stopped_stripe_renews_the_others_first";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
    let (owner, peer, [a, b]) = two_leases_in_two_stripes(&store, &clock);
    let before = peer.get(&b).unwrap().unwrap().lease_expires_at;
    let held = common::stripe_lock(&store, a.as_str());
    let holder = common::stopped_holder(test, tmp.path(), std::slice::from_ref(&held));
    // A third of the lease on, the owner renews.
    clock.advance(Duration::from_secs(10));
    std::thread::scope(|s| {
        let renewal = s.spawn(|| owner.renew_leases_of(&[a.clone(), b.clone()]));
        common::wait_for_lock_waiter(&held, "the renewal to wait for a's stripe", || {
            renewal.is_finished()
        });
        let renewed = peer.get(&b).unwrap().unwrap().lease_expires_at;
        // Past b's old lease while the renewal waits.
        clock.advance(Duration::from_secs(25));
        let reaped = peer.reap().unwrap();
        holder.kill();
        let results = renewal.join().unwrap();
        assert!(
            renewed > before,
            "b renewed while the batch waits: {renewed:?}"
        );
        assert!(reaped.tasks.iter().all(|t| t.id != b), "{reaped:?}");
        assert!(
            matches!(&results[1], Ok(t) if t.is_applied()),
            "{results:?}"
        );
    });
}

/// A renewal or a claim whose write waited for a stripe longer than the
/// lease (a process stopped while it held the stripe, then gone) hands out
/// no lapsed lease: the lease is renewed again as it is written, so a
/// peer's reap or claim right after takes nothing. (Each was reported
/// renewed, or claimed, with the lease it was given before the wait,
/// already lapsed: a peer reaped both renewed tasks, and claimed both
/// claimed ones at the next epoch, fencing the first claimer.)
#[cfg(target_os = "linux")]
#[test]
fn a_renewal_or_claim_that_waited_past_its_lease_hands_out_no_lapsed_lease() {
    let test = "a_renewal_or_claim_that_waited_past_its_lease_hands_out_no_lapsed_lease";
    common::hold_locks_if_the_holder();
    for claim in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
        let open = |instance: &str, wait: Duration| {
            FileStore::builder(&store)
                .clock(Arc::new(clock.clone()))
                .instance_id(instance)
                .stripe_wait(wait)
                .open()
                .unwrap()
        };
        let ids = [common::id_in_stripe("a", 7), common::id_in_stripe("b", 33)];
        let (first, second) = if claim {
            {
                let dead = open("dead", Duration::from_secs(30));
                for id in &ids {
                    dead.create(NewTask::new().id(id.clone()).resumable("job", json!({})))
                        .unwrap();
                }
            }
            // The dead owner's leases lapse.
            clock.advance(Duration::from_secs(31));
            (
                open("first", common::HANG),
                open("second", Duration::from_millis(500)),
            )
        } else {
            let owner = open("owner", common::HANG);
            for id in &ids {
                owner.create(NewTask::new().id(id.clone())).unwrap();
            }
            clock.advance(Duration::from_secs(10));
            (owner, open("peer", Duration::from_millis(500)))
        };
        let held = common::stripe_lock(&store, ids[0].as_str());
        let holder = common::stopped_holder(test, tmp.path(), std::slice::from_ref(&held));
        std::thread::scope(|s| {
            let handed = s.spawn(|| {
                if claim {
                    let claimed = first.claim(&["job"]).unwrap();
                    assert!(claimed.missed.is_empty(), "{claimed:?}");
                    claimed.tasks
                } else {
                    first
                        .renew_leases_of(&ids)
                        .into_iter()
                        .map(|t| t.unwrap().into_task())
                        .collect()
                }
            });
            common::wait_for_lock_waiter(&held, "the write to wait for a's stripe", || {
                handed.is_finished()
            });
            // Past the lease while it waits; then the holder is gone.
            clock.advance(Duration::from_secs(35));
            holder.kill();
            let handed = handed.join().unwrap();
            let now = taskstore::Clock::now(&clock);
            assert_eq!(handed.len(), 2, "claim: {claim}");
            for task in &handed {
                assert!(!task.is_orphan_at(now), "claim: {claim}: {task:?} at {now}");
            }
            let reaped = second.reap().unwrap();
            assert!(reaped.tasks.is_empty(), "claim: {claim}: {reaped:?}");
            if claim {
                let again = second.claim(&["job"]).unwrap();
                assert!(again.tasks.is_empty(), "{again:?}");
            }
        });
    }
}

/// After a wait for a stripe ran out (a process stopped holding stripe 7,
/// now gone), a write of another stripe that another handle holds for a
/// moment (1 s, a fifth of `stripe_wait`) waits for it, as any write does:
/// only the other stripes of the pass whose wait ran out are tried for
/// moments. (For a `stripe_wait` after any wait ran out, every call of the
/// handle tried every held stripe for 100 ms only, and failed.)
#[cfg(target_os = "linux")]
#[test]
fn after_a_wait_ran_out_a_briefly_held_stripe_is_still_waited_for() {
    let test = "after_a_wait_ran_out_a_briefly_held_stripe_is_still_waited_for";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let handle = FileStore::builder(&store)
        .stripe_wait(Duration::from_secs(5))
        .open()
        .unwrap();
    let (x, y) = (common::id_in_stripe("x", 7), common::id_in_stripe("y", 33));
    for id in [&x, &y] {
        handle.create(NewTask::new().id(id.clone())).unwrap();
    }
    let held = common::stripe_lock(&store, x.as_str());
    let holder = common::stopped_holder(test, tmp.path(), std::slice::from_ref(&held));
    assert!(
        handle
            .update(&x, TaskUpdate::new().metadata("k", json!(1)))
            .is_err()
    );
    holder.kill();
    let lock = common::open_lock_file(&common::stripe_lock(&store, y.as_str()));
    lock.lock().unwrap();
    std::thread::scope(|s| {
        let write = s.spawn(|| handle.update(&y, TaskUpdate::new().metadata("k", json!(2))));
        common::wait_for_lock_waiter(
            &common::stripe_lock(&store, y.as_str()),
            "the write to wait for y's stripe",
            || write.is_finished(),
        );
        lock.unlock().unwrap();
        let done = write.join().unwrap();
        assert!(matches!(&done, Ok(t) if t.is_applied()), "{done:?}");
    });
}

/// A `MemoryBackend` whose next batch of replaces, once armed, waits
/// `by` on `clock` (it moves the clock on as it writes): a batch of fresh
/// leases held up longer than a lease.
struct WaitsInBatch {
    inner: Arc<taskstore::MemoryBackend>,
    clock: ManualClock,
    by: Arc<std::sync::Mutex<Option<Duration>>>,
}

impl taskstore::backend::Backend for WaitsInBatch {
    fn load(&self, id: &TaskId) -> taskstore::Result<Option<Task>> {
        self.inner.load(id)
    }
    fn insert(
        &self,
        record: &taskstore::backend::Record,
        max_active: usize,
    ) -> taskstore::Result<taskstore::backend::Insert> {
        self.inner.insert(record, max_active)
    }
    fn replace(
        &self,
        current: &Task,
        next: &taskstore::backend::Record,
    ) -> taskstore::Result<taskstore::backend::Swap> {
        self.inner.replace(current, next)
    }
    fn replace_all(
        &self,
        swaps: &[(Task, taskstore::backend::Record)],
    ) -> Vec<taskstore::Result<taskstore::backend::Swap>> {
        let swapped = self.inner.replace_all(swaps);
        if let Some(by) = self.by.lock().unwrap().take() {
            self.clock.advance(by);
        }
        swapped
    }
    fn remove(&self, current: &Task) -> taskstore::Result<taskstore::backend::Swap> {
        self.inner.remove(current)
    }
    fn scan(
        &self,
        scan: &taskstore::backend::Scan,
    ) -> taskstore::Result<taskstore::backend::Scanned> {
        self.inner.scan(scan)
    }
}

/// A renewal or a claim whose batch waited longer than the lease while
/// the clock read behind the handle's time (stepped back, and set right
/// again later) hands out no lapsed lease either: the handle's own leases
/// run on by what the clock goes on then, and a batch that outlasted one
/// is renewed again, so that once the clock is set right a peer reaps or
/// claims nothing. (The lapse was judged by the handle's time, which
/// stands still while the clock is behind: such a batch never looked
/// lapsed, and the task was reaped, or claimed, under its live owner once
/// the clock was set right.)
#[test]
fn a_batch_of_leases_that_waited_past_its_lease_with_the_clock_behind_hands_out_no_lapsed_lease() {
    for claim in [false, true] {
        let clock = ManualClock::new(T0);
        let backend = Arc::new(taskstore::MemoryBackend::new());
        let wait = Arc::new(std::sync::Mutex::new(None));
        let open = |instance: &str| {
            taskstore::Store::with_backend(WaitsInBatch {
                inner: Arc::clone(&backend),
                clock: clock.clone(),
                by: Arc::clone(&wait),
            })
            .clock(Arc::new(clock.clone()))
            .instance_id(instance)
            .lease(LEASE)
            .build()
            .unwrap()
        };
        let (first, peer) = (open("first"), open("peer"));
        // The first handle reads T0; then the clock is stepped back an hour.
        assert_eq!(first.now(), T0);
        let behind = T0 - Duration::from_secs(3_600);
        clock.set(behind);
        assert_eq!(first.now(), T0, "the handle's time stands");
        let task = if claim {
            let dead = open("dead");
            let task = dead
                .create(NewTask::new().resumable("job", json!({})))
                .unwrap();
            drop(dead);
            // Its lease lapses by the clock.
            clock.advance(LEASE + Duration::from_secs(1));
            task
        } else {
            let task = first.create(NewTask::new()).unwrap();
            clock.advance(LEASE / 3);
            task
        };
        // The batch writing the fresh lease waits two leases.
        *wait.lock().unwrap() = Some(LEASE * 2);
        let handed = if claim {
            let claimed = first.claim(&["job"]).unwrap();
            assert!(claimed.missed.is_empty(), "{claimed:?}");
            claimed.tasks
        } else {
            first
                .renew_leases_of(std::slice::from_ref(&task.id))
                .into_iter()
                .map(|t| t.unwrap().into_task())
                .collect()
        };
        assert_eq!(handed.len(), 1, "claim: {claim}");
        // The clock is set right: as much time has gone by since T0 as the
        // clock went on since it was stepped back.
        let gone_on = taskstore::Clock::now(&clock) - behind;
        clock.set(T0 + gone_on);
        let reaped = peer.reap().unwrap();
        assert!(reaped.tasks.is_empty(), "claim: {claim}: {reaped:?}");
        if claim {
            let again = peer.claim(&["job"]).unwrap();
            assert!(again.tasks.is_empty(), "{again:?}");
        }
        let stored = peer.get(&task.id).unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.owner.as_deref()),
            (TaskStatus::Working, Some("first")),
            "claim: {claim}"
        );
    }
}
