//! Several processes with short leases (each child is this test binary, see
//! `common::spawn`): a killed owner reaped by another process and two
//! reapers making one transition per task, on the system clock; a renewing
//! owner never reaped, on a clock the processes share and the test moves.

use super::*;

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
    let test = "processes::killed_owner_is_reaped_by_another_process";
    // Tasks of a live instance whose lease (a day) outlasts any stall of
    // the machine: never reaped here. (With the default 30 s lease, the
    // test process stopped 31 s after making them let the reaper reap them
    // too, rightly.)
    let bystander = FileStore::builder(&store)
        .instance_id("bystander")
        .lease(Duration::from_secs(86_400))
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
const RENEWER_LEASE: Duration = Duration::from_secs(3);
/// How far the test moves the shared clock once the renewer has renewed at
/// its time: less than a lease, so that every lease runs a second past it.
const STEP: Duration = Duration::from_secs(2);

/// A clock several processes share, which only the test moves: the time in
/// a file (Unix nanoseconds, written whole). A process stalled for seconds
/// (a loaded machine) lets no time pass on it, so no lease lapses because
/// of the stall; a lease lapses only once the test has moved the clock
/// past it.
#[derive(Debug)]
struct SharedClock(PathBuf);

impl SharedClock {
    fn set(&self, at: OffsetDateTime) {
        write_atomic(&self.0, at.unix_timestamp_nanos().to_string().as_bytes());
    }
}

impl taskstore::Clock for SharedClock {
    fn now(&self) -> OffsetDateTime {
        let nanos = fs::read_to_string(&self.0).expect("read the shared clock");
        OffsetDateTime::from_unix_timestamp_nanos(nanos.parse().expect("the shared clock's time"))
            .expect("the shared clock's time")
    }
}

/// A handle on the shared clock in `work`.
fn open_shared(store: &Path, work: &Path, instance: &str) -> FileStore {
    FileStore::builder(store)
        .instance_id(instance)
        .lease(RENEWER_LEASE)
        .durability(Durability::Eventual)
        .clock(Arc::new(SharedClock(work.join("clock"))))
        .open()
        .unwrap()
}

/// An owner renewing its tasks, another process reaping all the while,
/// both on a clock the test moves a step (less than a lease) each time the
/// owner has renewed at its time, until every original lease has lapsed by
/// a full lease more: no task is ever reaped. (On the system clock, a
/// renewer stalled longer than its lease, as a loaded machine can stall a
/// process, was reaped rightly and failed the test.)
#[test]
fn renewing_owner_is_never_reaped() {
    if let Some((role, args)) = common::role() {
        let (store, work) = dirs(&args);
        let stop = work.join("stop");
        return match role.as_str() {
            "renewer" => {
                let s = open_shared(&store, &work, "alive");
                let clock = SharedClock(work.join("clock"));
                let created: Vec<Task> = (0..RENEWED)
                    .map(|i| s.create(NewTask::new().id(id("alive", i))).unwrap())
                    .collect();
                write_tasks(&work.join("created.jsonl"), &created);
                while !stop.exists() {
                    // The renewal goes by this time or a later one.
                    let at = taskstore::Clock::now(&clock);
                    assert_eq!(s.renew_leases().unwrap(), RENEWED, "a task was reaped");
                    let at = at.unix_timestamp_nanos().to_string();
                    write_atomic(&work.join("renewed"), at.as_bytes());
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            "reaper" => {
                let s = open_shared(&store, &work, "reaper");
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
    let test = "processes::renewing_owner_is_never_reaped";
    let clock = SharedClock(work.join("clock"));
    let mut now = OffsetDateTime::now_utc();
    clock.set(now);
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
    let counted = |name: &str| -> Option<i128> {
        fs::read_to_string(work.join(name))
            .ok()
            .and_then(|p| p.parse().ok())
    };
    // Run until every original lease has lapsed by a full lease more, so that
    // without renewals each task would have been reaped.
    let horizon = created
        .iter()
        .filter_map(|t| t.lease_expires_at)
        .max()
        .unwrap()
        + RENEWER_LEASE;
    while now <= horizon {
        let at = now.unix_timestamp_nanos();
        wait_for(&mut children, "a renewal at the clock's time", || {
            counted("renewed").is_some_and(|renewed| renewed >= at)
        });
        now += STEP;
        clock.set(now);
    }
    let passes = || counted("passes").unwrap_or(0);
    let seen = passes();
    wait_for(&mut children, "more reaper passes", || passes() >= seen + 3);
    touch(&work.join("stop"));
    for c in children {
        c.finish();
    }

    let s = open_shared(&store, &work, "checker");
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
    let test = "processes::two_reapers_make_one_transition_per_task";
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
