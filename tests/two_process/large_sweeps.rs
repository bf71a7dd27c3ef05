//! Large sweeps (every stripe's lock at once) beside writers in other
//! processes, of files the sweeper never read, of finished tasks, and two of
//! them at once: each expired task deleted exactly once.

use super::*;

// ---------------------------------------------------------------------------
// A large sweep (every stripe's lock at once, its deletions spread over the
// cores) beside writers in other processes.

/// Expired tasks the sweep deletes: several batches of it.
const EXPIRED: usize = 2_500;
/// Running tasks without a TTL that the writers update during the sweep.
const LIVE: usize = 200;
/// Running tasks the sweeper knows before the sweep, which the writers
/// delete during it.
const DOOMED: usize = 100;
/// Writer processes.
const SWEEP_WRITERS: usize = 2;

#[test]
fn a_large_sweep_beside_writers_in_other_processes_deletes_exactly_the_expired() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "sweep-writer");
        return sweep_writer(&args);
    }
    large_sweep_beside_writers(
        "large_sweeps::a_large_sweep_beside_writers_in_other_processes_deletes_exactly_the_expired",
        false,
    );
}

/// The same, by a sweeper whose snapshot is complete before the expired
/// tasks are made: it meets them as new files, which the sweep reads once
/// each under its lock and removes at once if expired
/// (`src/file/unread.rs`).
#[test]
fn a_large_sweep_of_files_the_sweeper_has_not_read_deletes_exactly_the_expired() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "sweep-writer");
        return sweep_writer(&args);
    }
    large_sweep_beside_writers(
        "large_sweeps::a_large_sweep_of_files_the_sweeper_has_not_read_deletes_exactly_the_expired",
        true,
    );
}

/// The same with the expired tasks finished (each with its `expiring/`
/// entry), which the sweep reads once each under every stripe and removes
/// as it meets them (`Backend::remove_due`) while the writers make new
/// tasks under their ids.
#[test]
fn a_large_sweep_of_finished_tasks_beside_writers_in_other_processes_deletes_exactly_the_expired() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "sweep-writer");
        return sweep_writer(&args);
    }
    large_sweep_of(
        "large_sweeps::a_large_sweep_of_finished_tasks_beside_writers_in_other_processes_deletes_exactly_the_expired",
        false,
        true,
    );
}

/// The body of the large-sweep tests of running tasks (see
/// [`large_sweep_of`]).
fn large_sweep_beside_writers(test: &str, listed_first: bool) {
    large_sweep_of(test, listed_first, false);
}

/// The body of the large-sweep tests, run as test `test`; with
/// `listed_first`, the sweeper lists the store (its live and doomed tasks)
/// before the expired ones are made; with `finished`, each expired task is
/// completed before it expires.
fn large_sweep_of(test: &str, listed_first: bool, finished: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let sweeper = open(&store, "sweeper");
    let fast = open_fast(&store, "setup");
    for n in 0..LIVE {
        fast.create(NewTask::new().id(id("live", n))).unwrap();
    }
    for n in 0..DOOMED {
        fast.create(NewTask::new().id(id("doomed", n))).unwrap();
    }
    if listed_first {
        let known = sweeper.list(&ListQuery::active()).unwrap().tasks;
        assert_eq!(known.len(), LIVE + DOOMED);
    }
    // Finished tasks are made an hour in the past with a minute's TTL,
    // by a handle whose clock stays there: expired for everyone else.
    let past = finished.then(|| {
        FileStore::builder(&store)
            .instance_id("setup-past")
            .durability(Durability::Eventual)
            .clock(std::sync::Arc::new(taskstore::ManualClock::new(
                time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(3_600),
            )))
            .open()
            .unwrap()
    });
    let expired: BTreeSet<TaskId> = (0..EXPIRED)
        .map(|n| match &past {
            Some(past) => {
                let task = past
                    .create(NewTask::new().ttl(std::time::Duration::from_secs(60)))
                    .unwrap();
                assert!(past.complete(&task.id, json!(n)).unwrap().is_applied());
                task.id
            }
            None => {
                fast.create(NewTask::new().ttl(std::time::Duration::from_millis(1)))
                    .unwrap()
                    .id
            }
        })
        .collect();
    drop(past);
    drop(fast);
    // The writers also create tasks under expired tasks' ids (the last
    // first, which the sweep reaches last): those must survive it.
    let names: String = expired.iter().map(|t| format!("{t}\n")).collect();
    write_atomic(&work.join("expired"), names.as_bytes());
    let mut children: Vec<_> = (0..SWEEP_WRITERS)
        .map(|k| {
            spawn(
                &work,
                test,
                "sweep-writer",
                &args(&store, &work, &[k.to_string()]),
            )
        })
        .collect();
    wait_for(&mut children, "every writer to be ready", || {
        (0..SWEEP_WRITERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    touch(&work.join("go"));
    // Each writer has written before the sweep starts, and writes on
    // through it.
    wait_for(&mut children, "every writer to write", || {
        (0..SWEEP_WRITERS).all(|k| work.join(format!("writing-{k}")).exists())
    });
    let swept = sweeper.sweep().unwrap();
    touch(&work.join("stop"));
    for c in children {
        c.finish();
    }
    assert!(
        swept.missed.is_empty() && swept.skipped.is_empty(),
        "{swept:?}"
    );

    // Every write of the writers stands: each live task's revision counts
    // every update, and every task they created is there, under an expired
    // task's id too; every other expired task is gone.
    let reader = open(&store, "reader");
    let mut updates = BTreeMap::<TaskId, u64>::new();
    let (mut created, mut deleted) = (BTreeSet::new(), BTreeSet::new());
    for k in 0..SWEEP_WRITERS {
        let report = fs::read_to_string(work.join(format!("report-{k}"))).unwrap();
        for line in report.lines() {
            match line.split_once(' ') {
                Some(("updated", task)) => *updates.entry(parse(task)).or_default() += 1,
                Some(("created", task)) => assert!(created.insert(parse(task))),
                Some(("deleted", task)) => assert!(deleted.insert(parse(task))),
                _ => panic!("a report line: {line}"),
            }
        }
    }
    assert!(!updates.is_empty() && !created.is_empty() && !deleted.is_empty());
    for task in &deleted {
        assert_eq!(reader.get(task).unwrap(), None, "{task} was deleted");
    }
    let recreated = created.intersection(&expired).count();
    assert!(recreated > 0);
    assert!(
        swept.deleted <= EXPIRED && swept.deleted >= EXPIRED - recreated,
        "{} deleted, {recreated} recreated",
        swept.deleted
    );
    for task in expired.difference(&created) {
        assert_eq!(reader.get(task).unwrap(), None, "{task}");
        for area in ["active", "done"] {
            assert!(!store.join(area).join(format!("{task}.json")).exists());
        }
    }
    assert!(
        common::files_in(&store, "expiring").is_empty(),
        "no entry of a swept task is left"
    );
    let listed: BTreeMap<TaskId, Task> = reader
        .list(&ListQuery::active())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    assert_eq!(listed.len(), LIVE + DOOMED - deleted.len() + created.len());
    for n in 0..LIVE {
        let task = &listed[&id("live", n)];
        assert_eq!(
            task.revision,
            1 + updates.get(&task.id).copied().unwrap_or(0)
        );
    }
    for task in &created {
        assert_eq!(listed[task].revision, 1);
    }
    // The sweeper's own snapshot, kept by its change notices through the
    // sweep (which stops noticing its own unlinks while it holds every
    // stripe), agrees with the fresh handle's: every write and unlink of
    // the writers seen, no removed file kept.
    let seen: BTreeMap<TaskId, u64> = sweeper
        .list(&ListQuery::active())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id, t.revision))
        .collect();
    let want: BTreeMap<TaskId, u64> = listed
        .iter()
        .map(|(id, t)| (id.clone(), t.revision))
        .collect();
    assert!(
        seen == want,
        "the sweeper's listing differs from a fresh handle's: {} tasks against {}",
        seen.len(),
        want.len()
    );
}

/// Updates the live tasks, creates tasks and deletes its share of the
/// doomed ones until told to stop, and reports
/// every write applied.
fn sweep_writer(args: &[String]) {
    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let s = open(&store, &format!("sweep-writer-{k}"));
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let mut report = String::new();
    let mut rng = Rng::new(k as u64 + 1);
    let expired = fs::read_to_string(work.join("expired")).unwrap();
    let mut mine: Vec<TaskId> = expired
        .lines()
        .skip(k)
        .step_by(SWEEP_WRITERS)
        .map(parse)
        .collect();
    let mut n = 0;
    while !work.join("stop").exists() || n < 20 {
        let live = id("live", (rng.next() % LIVE as u64) as usize);
        let updated = s
            .update(&live, TaskUpdate::new().metadata(format!("w{k}"), n))
            .unwrap();
        assert!(updated.is_applied(), "{updated:?}");
        report.push_str(&format!("updated {live}\n"));
        let new = s
            .create(NewTask::new().id(parse(&format!("new-{k}-{n:05}"))))
            .unwrap();
        report.push_str(&format!("created {}\n", new.id));
        // An unlink from `active/` of a task the sweeper knew before.
        let doomed = k + n * SWEEP_WRITERS;
        if doomed < DOOMED {
            assert!(s.delete(&id("doomed", doomed)).unwrap());
            report.push_str(&format!("deleted {}\n", id("doomed", doomed)));
        }
        if let Some(old) = mine.pop() {
            let again = s.create(NewTask::new().id(old)).unwrap();
            report.push_str(&format!("created {}\n", again.id));
        }
        n += 1;
        if n == 10 {
            touch(&work.join(format!("writing-{k}")));
        }
    }
    write_atomic(&work.join(format!("report-{k}")), report.as_bytes());
}

// ---------------------------------------------------------------------------
// Two large sweeps at once.

/// Expired tasks of each kind (running, finished) two sweepers race for.
const RACED: usize = 1_200;
/// Tasks that are not expired: running, and finished without a TTL.
const KEPT: usize = 100;
/// Sweeping processes.
const SWEEPERS: usize = 2;

/// Two processes sweep one store at once, each in batches that take every
/// stripe, both meeting the expired tasks as new files (each listed the
/// store before they were made, as a server's handle has): every expired task,
/// running or finished, is deleted exactly once between them (one
/// `task.expired` event, in one process), nothing else is touched, neither
/// misses or skips anything, and the store they leave is whole: no
/// `expiring/` entry left behind (an entry one sweeper's removal made stale
/// goes, after an fsync of `done/`, in whichever meets it), nothing for
/// `verify` to report.
#[test]
fn two_large_sweeps_in_two_processes_delete_each_expired_task_once() {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "racing-sweeper");
        return racing_sweeper(&args);
    }
    let test = "large_sweeps::two_large_sweeps_in_two_processes_delete_each_expired_task_once";
    let tmp = tempfile::tempdir().unwrap();
    let (store, work) = (tmp.path().join("store"), tmp.path().to_owned());
    let fast = open_fast(&store, "setup");
    for n in 0..KEPT {
        fast.create(NewTask::new().id(id("running", n))).unwrap();
        let kept = fast.create(NewTask::new().id(id("finished", n))).unwrap();
        assert!(fast.complete(&kept.id, json!(n)).unwrap().is_applied());
    }
    let mut children: Vec<_> = (0..SWEEPERS)
        .map(|k| {
            let k = k.to_string();
            spawn(&work, test, "racing-sweeper", &args(&store, &work, &[k]))
        })
        .collect();
    wait_for(&mut children, "every sweeper to be ready", || {
        (0..SWEEPERS).all(|k| work.join(format!("ready-{k}")).exists())
    });
    // Made after the sweepers listed the store: expired once their TTL is
    // past.
    let ttl = std::time::Duration::from_secs(1);
    let mut expired = BTreeSet::new();
    let mut last_expiry = None;
    for n in 0..RACED {
        let running = fast.create(NewTask::new().ttl(ttl)).unwrap();
        let done = fast.create(NewTask::new().ttl(ttl)).unwrap();
        assert!(fast.complete(&done.id, json!(n)).unwrap().is_applied());
        last_expiry = last_expiry.max(done.expires_at());
        expired.insert(running.id);
        expired.insert(done.id);
    }
    drop(fast);
    // Past every TTL by the clock the sweepers go by, the wall clock (a
    // sleep of the TTL need not be: the wall clock may run slower than the
    // monotonic one while it is slewed back).
    let last_expiry = last_expiry.unwrap();
    while time::OffsetDateTime::now_utc() <= last_expiry {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    touch(&work.join("go"));
    for child in children {
        child.finish();
    }

    let mut deleted = BTreeMap::<TaskId, usize>::new();
    let mut counted = 0;
    for k in 0..SWEEPERS {
        let report = fs::read_to_string(work.join(format!("report-{k}"))).unwrap();
        let mut lines = report.lines();
        let head = lines.next().unwrap();
        assert_eq!(head, "missed 0 skipped 0", "sweeper {k}");
        counted += lines
            .next()
            .and_then(|line| line.strip_prefix("deleted "))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap();
        for task in lines {
            *deleted.entry(parse(task)).or_default() += 1;
        }
    }
    assert_eq!(counted, expired.len(), "the sweeps' counts add up");
    let twice: Vec<_> = deleted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "deleted more than once: {twice:?}");
    let keys: BTreeSet<TaskId> = deleted.into_keys().collect();
    assert!(keys == expired, "every expired task deleted, nothing else");

    let reader = open(&store, "reader");
    let all = reader.list(&ListQuery::all()).unwrap();
    assert!(all.skipped.is_empty(), "{:?}", all.skipped);
    assert_eq!(all.tasks.len(), 2 * KEPT, "the kept tasks, all of them");
    assert!(all.tasks.iter().all(|t| !expired.contains(&t.id)));
    assert_eq!(fs::read_dir(store.join("expiring")).unwrap().count(), 0);
    let report = taskstore::FileCheck::open(&store)
        .and_then(|check| check.verify())
        .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// Opens a durable handle with an event log, lists the store, says it is
/// ready, sweeps on `go`, and reports what its
/// sweep missed and skipped, how many it deleted, and the id of each
/// `task.expired` event.
fn racing_sweeper(args: &[String]) {
    use std::sync::Arc;
    use taskstore::{EventLog, TaskEventKind};

    let (store, work) = dirs(args);
    let k: usize = args[2].parse().unwrap();
    let events = Arc::new(EventLog::with_capacity(4 * RACED));
    let s = FileStore::builder(&store)
        .instance_id(format!("sweeper-{k}"))
        .sink(events.clone())
        .open()
        .expect("open the store");
    let known = s.list(&ListQuery::active()).unwrap().tasks;
    assert_eq!(known.len(), KEPT);
    touch(&work.join(format!("ready-{k}")));
    wait_until("go", || work.join("go").exists());
    let swept = s.sweep().unwrap();
    let mut report = format!(
        "missed {} skipped {}\ndeleted {}\n",
        swept.missed.len(),
        swept.skipped.len(),
        swept.deleted
    );
    for record in events.snapshot() {
        if record.event.kind == TaskEventKind::Expired {
            let task = record.event.data["taskId"].as_str().unwrap();
            report.push_str(&format!("{task}\n"));
        }
    }
    write_atomic(&work.join(format!("report-{k}")), report.as_bytes());
}
