//! Reaping orphans in one process: expired tasks left to the sweep (and out of
//! the dry run), an orphan reaped at the cap, the owner finishing against a
//! reaper, an orphan at the highest epoch.

use super::*;

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
