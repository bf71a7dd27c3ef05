//! Processes stopped holding stripe locks: an owner reaped but for its held
//! stripe, passes, renewals and claims that wait once and hand out no lapsed
//! lease, and a briefly held stripe still waited for after a wait ran out.

use super::*;

/// An owner stopped (`SIGSTOP`) while it holds a task's stripe lock keeps
/// it (the kernel frees a dead process's lock, not a stopped one's): once
/// its leases lapsed, another process's reap waits for that stripe its
/// handle's `stripe_wait` at most, reports that stripe's tasks missed,
/// naming the lock, and reaps every other. (The reap waited on the lock
/// for as long as the owner stayed stopped.)
#[test]
fn an_owner_stopped_holding_a_stripe_lock_is_reaped_but_for_that_stripe() {
    const TASKS: usize = 64;
    let test = "stopped::an_owner_stopped_holding_a_stripe_lock_is_reaped_but_for_that_stripe";
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
        // Every thread of it: the one holding the stripe may be the last
        // to meet the signal.
        wait_until("the owner to stop", || common::is_stopped(owner.child.id()));
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
    let test = "stopped::a_pass_beside_a_process_stopped_under_every_stripe_waits_once";
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
    let test = "stopped::a_renewal_held_up_by_one_stopped_stripe_renews_the_others_first";
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
    let test = "stopped::a_renewal_or_claim_that_waited_past_its_lease_hands_out_no_lapsed_lease";
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
    let test = "stopped::after_a_wait_ran_out_a_briefly_held_stripe_is_still_waited_for";
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

/// A pass one of whose waits ran out still waits for a stripe a write of
/// another handle holds, until its `stripe_wait` is spent: a renewal of
/// `a` (its stripe held by a stopped process, and stuck: an update's wait
/// for it ran out before) and `b` (its stripe held by another handle,
/// which lets it go 300 ms after the renewal waits for it, a sixteenth of
/// the wait) tries `a` for moments only, then waits for `b` and renews it. (Once `a`'s try ran out, the
/// pass tried `b` for 100 ms only, and reported it missed while its
/// holder, a healthy write, still held it.)
#[cfg(target_os = "linux")]
#[test]
fn a_pass_that_gave_up_a_stuck_stripe_still_waits_for_a_briefly_held_one() {
    let test = "stopped::a_pass_that_gave_up_a_stuck_stripe_still_waits_for_a_briefly_held_one";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
    let owner = FileStore::builder(&store)
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .stripe_wait(Duration::from_secs(5))
        .open()
        .unwrap();
    let (a, b) = (common::id_in_stripe("a", 7), common::id_in_stripe("b", 33));
    for id in [&a, &b] {
        owner.create(NewTask::new().id(id.clone())).unwrap();
    }
    let held = common::stripe_lock(&store, a.as_str());
    let _holder = common::stopped_holding(test, tmp.path(), &held);
    // `a`'s stripe is stuck to the handle.
    assert!(
        owner
            .update(&a, TaskUpdate::new().metadata("k", json!(1)))
            .is_err()
    );
    let briefly = common::stripe_lock(&store, b.as_str());
    let lock = common::open_lock_file(&briefly);
    lock.lock().unwrap();
    clock.advance(Duration::from_secs(1));
    std::thread::scope(|s| {
        let renewal = s.spawn(|| owner.renew_leases_of(&[a.clone(), b.clone()]));
        common::wait_for_lock_waiter(&briefly, "the renewal to wait for b's stripe", || {
            renewal.is_finished()
        });
        // A write's hold, past the moments a stuck stripe is tried for.
        std::thread::sleep(Duration::from_millis(300));
        lock.unlock().unwrap();
        let results = renewal.join().unwrap();
        assert!(
            matches!(&results[0], Err(e) if e.to_string().contains(&held.display().to_string())),
            "{results:?}"
        );
        assert!(
            matches!(&results[1], Ok(t) if t.is_applied()),
            "{results:?}"
        );
    });
}

/// A pass one of whose waits ran out tries each other stripe held once,
/// without waiting: a renewal of 64 leases, one in each stripe, all held
/// by a stopped process, tries each stripe twice (once before it waits for
/// any, once after), the first of them waited for its whole `stripe_wait`
/// in between; and a second renewal, all of them stuck by then, tries the
/// first stuck one for moments (more than twice), each other twice. Counted
/// at the file-system seam. (The pass tried each for 100 ms, polling: 6.4 s
/// a pass after its one wait, for as long as the holder stays stopped.)
#[cfg(all(target_os = "linux", feature = "fault-injection"))]
#[test]
fn a_pass_whose_wait_ran_out_tries_each_other_held_stripe_once() {
    let test = "stopped::a_pass_whose_wait_ran_out_tries_each_other_held_stripe_once";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let clock = ManualClock::new(datetime!(2026-01-01 00:00 UTC));
    let faults = taskstore::FaultInjector::new();
    let owner = FileStore::builder(&store)
        .clock(Arc::new(clock.clone()))
        .instance_id("owner")
        .stripe_wait(Duration::from_secs(1))
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let ids: Vec<TaskId> = (0..64)
        .map(|stripe| common::id_in_stripe("lease", stripe))
        .collect();
    for id in &ids {
        owner.create(NewTask::new().id(id.clone())).unwrap();
    }
    let locks: Vec<PathBuf> = ids
        .iter()
        .map(|id| common::stripe_lock(&store, id.as_str()))
        .collect();
    let _holder = common::KilledOnDrop::new(common::stopped_holder(test, tmp.path(), &locks));
    let mut before = vec![0; locks.len()];
    let tries: Vec<_> = locks
        .iter()
        .map(|lock| faults.count_at(taskstore::FsOp::Lock, lock))
        .collect();
    for (pass, tried_for_moments) in [("first", 0), ("second", 1)] {
        clock.advance(Duration::from_secs(1));
        let renewed = owner.renew_leases_of(&ids);
        assert!(renewed.iter().all(Result::is_err), "{pass}: {renewed:?}");
        let now: Vec<u64> = tries.iter().map(taskstore::Count::calls).collect();
        let this: Vec<u64> = now.iter().zip(&before).map(|(n, b)| n - b).collect();
        before = now;
        let polled = this.iter().filter(|&&n| n > 2).count();
        assert!(
            this.iter().all(|&n| n >= 2) && polled == tried_for_moments,
            "{pass} pass: the tries of each stripe: {this:?}"
        );
    }
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
