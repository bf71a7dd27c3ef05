//! Sweeps: expiry shared by every handle, a store copied without its hard
//! links, held and busy stripes that hold up no write of another, busy writers
//! of the sweep's own handle.

use super::*;

/// A handle of the store in `dir` on `clock`.
fn on_clock(dir: &Path, clock: &ManualClock) -> FileStore {
    FileStore::builder(dir)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap()
}

#[test]
fn expiry_is_shared_by_every_handle_and_sweep_deletes_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = || on_clock(dir.path(), &clock);
    let (a, b) = (open(), open());
    let short = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    let done = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    let unseen = a
        .create(NewTask::new().ttl(Duration::from_secs(10)))
        .unwrap();
    assert!(a.complete(&done.id, json!(1)).unwrap().is_applied());
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        count(&dir.path().join("active")),
        2,
        "expiry is lazy: nothing is deleted when the time passes"
    );
    // Every handle agrees at once; a handle that meets an expired task
    // deletes it, so it stays gone even if a clock is stepped back.
    assert_eq!(a.get(&short.id).unwrap(), None);
    assert_eq!(b.get(&done.id).unwrap(), None);
    assert_eq!(count(&dir.path().join("active")), 1);
    assert_eq!(count(&dir.path().join("done")), 0);
    // The sweep deletes the rest.
    assert_eq!(b.sweep_expired().unwrap(), 1);
    assert_eq!(a.get(&unseen.id).unwrap(), None);
    assert_eq!(count(&dir.path().join("active")), 0);
    assert_eq!(count(&dir.path().join("done")), 0);
}

/// A store copied file by file (`cp -r`, `rsync` without `-H`), whose
/// `expiring/` entries are copies of its task files instead of second
/// names, still has its finished tasks expire, whether a sweep meets a few
/// or many. (A sweep of fewer than 256 due tasks took each entry for stale
/// and dropped it: the tasks then stayed in `done/` for ever.)
#[test]
fn a_store_copied_without_its_hard_links_still_sweeps_its_finished_tasks() {
    let ttl = Duration::from_secs(60);
    for n in [5, 256] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(OffsetDateTime::now_utc());
        let open = |root: &Path| {
            FileStore::builder(root)
                .clock(Arc::new(clock.clone()))
                .durability(taskstore::Durability::Eventual)
                .open()
                .unwrap()
        };
        let original = dir.path().join("original");
        let store = open(&original);
        for i in 0..n {
            let task = store.create(NewTask::new().ttl(ttl)).unwrap();
            assert!(store.complete(&task.id, json!(i)).unwrap().is_applied());
        }
        drop(store);
        let copy = dir.path().join("copy");
        common::copy_dir(&original, &copy);
        clock.advance(ttl * 2);
        let swept = open(&copy).sweep().unwrap();
        assert_eq!(swept.deleted, n, "{n} tasks: {swept:?}");
        assert_eq!(count(&copy.join("done")), 0, "{n} tasks");
        assert_eq!(count(&copy.join("expiring")), 0, "{n} tasks");
    }
}

/// A store in a new directory, on a clock of its own, and two handles on
/// it without fsync, as the held-stripe tests use them: a sweeper that
/// waits for a stripe as long as the test does, and a writer that gives
/// up (an error) after `writer_wait`.
fn sweeper_and_writer(
    writer_wait: Duration,
) -> (tempfile::TempDir, ManualClock, FileStore, FileStore) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = |wait: Duration| {
        FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .durability(Durability::Eventual)
            .stripe_wait(wait)
            .open()
            .unwrap()
    };
    let (sweeper, writer) = (open(common::HANG), open(writer_wait));
    (dir, clock, sweeper, writer)
}

/// A stripe another process holds (stopped while it holds it, say) keeps a
/// sweep from deleting that stripe's expired tasks alone: every other
/// expired task is deleted, finished or running, and each of the held
/// stripe's is reported missed, naming the lock. Once the lock is let go,
/// the next sweep deletes the rest. With few tasks (each batch a stripe at
/// a time) and with more than a large pass (every stripe at once, which
/// cannot be had).
#[test]
fn a_sweep_deletes_every_expired_task_but_a_held_stripes() {
    for finished in [40, 300] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
        let store = FileStore::builder(dir.path())
            .clock(Arc::new(clock.clone()))
            .durability(Durability::Eventual)
            .stripe_wait(Duration::from_millis(200))
            .open()
            .unwrap();
        let ttl = Duration::from_secs(10);
        let mut ids: Vec<taskstore::TaskId> = (0..finished + 10)
            .map(|n| {
                let id = store.create(NewTask::new().ttl(ttl)).unwrap().id;
                if n < finished {
                    assert!(store.complete(&id, json!(n)).unwrap().is_applied());
                }
                id
            })
            .collect();
        clock.advance(ttl * 2);
        let held = common::stripe(ids[0].as_str());
        let lock = common::open_lock_file(&common::stripe_lock(dir.path(), ids[0].as_str()));
        lock.lock().unwrap();
        let swept = store.sweep().unwrap();
        let mut want: Vec<&taskstore::TaskId> = ids
            .iter()
            .filter(|id| common::stripe(id.as_str()) == held)
            .collect();
        want.sort();
        let mut missed: Vec<&taskstore::TaskId> = swept.missed.iter().map(|m| &m.id).collect();
        missed.sort();
        assert_eq!(
            missed, want,
            "{finished} finished: the held stripe's are missed"
        );
        assert_eq!(swept.deleted, ids.len() - want.len(), "{finished} finished");
        for missed in &swept.missed {
            let said = missed.error.to_string();
            assert!(said.contains(&format!("locks/{held:02}.lock")), "{said}");
        }
        lock.unlock().unwrap();
        assert_eq!(store.sweep().unwrap().deleted, want.len(), "{finished}");
        ids.retain(|id| store.get(id).unwrap().is_some());
        assert!(ids.is_empty(), "{finished}: {ids:?} left");
    }
}

/// A sweep that waits for a stripe another process holds holds no other
/// stripe while it waits: a write of a task of another stripe goes on
/// meanwhile. (The sweep took every stripe in order and waited for the
/// held one holding all those below it, for its `stripe_wait`, 30 s by
/// default: every write to them waited as long.) Once the stripe is let
/// go, the sweep deletes every expired task.
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_waiting_for_a_held_stripe_holds_up_no_write_of_another() {
    let (dir, clock, sweeper, writer) = sweeper_and_writer(Duration::from_secs(10));
    let held = 63;
    let ttl = Duration::from_secs(10);
    // More than a large pass: the sweep takes every stripe at once.
    let expired = common::finished_with_ttl(&writer, 300, ttl);
    let live = std::iter::repeat_with(|| writer.create(NewTask::new()).unwrap())
        .find(|task| common::stripe(task.id.as_str()) != held)
        .unwrap();
    clock.advance(ttl * 2);
    let path = dir.path().join("locks").join(format!("{held:02}.lock"));
    let lock = common::open_lock_file(&path);
    lock.lock().unwrap();
    std::thread::scope(|s| {
        let sweep = s.spawn(|| sweeper.sweep());
        common::wait_for_lock_waiter(&path, "the sweep to wait for the held stripe", || {
            sweep.is_finished()
        });
        let done = writer.complete(&live.id, json!("while the sweep waits"));
        assert!(
            matches!(&done, Ok(t) if t.is_applied()),
            "the write waited with the sweep: {done:?}"
        );
        assert!(
            !sweep.is_finished(),
            "the sweep went on without the held stripe"
        );
        lock.unlock().unwrap();
        let swept = sweep.join().unwrap().unwrap();
        assert_eq!(swept.deleted, expired.len(), "{:?}", swept.missed);
    });
    for id in &expired {
        assert_eq!(writer.get(id).unwrap(), None);
    }
}

/// The same after the sweep met two other stripes held for a moment
/// (here 10 and 20, each let go once the sweep waits for it): a write of
/// a third stripe goes on while it waits for the held one. (Its third try
/// took every stripe waiting for each holding those before it, for as
/// long as the held one's `stripe_wait`.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_that_met_busy_stripes_holds_up_no_write_while_it_waits_for_a_held_one() {
    let (dir, clock, sweeper, writer) = sweeper_and_writer(Duration::from_secs(3));
    let ttl = Duration::from_secs(10);
    let expired = common::finished_with_ttl(&writer, 300, ttl);
    let live = std::iter::repeat_with(|| writer.create(NewTask::new()).unwrap())
        .find(|task| common::stripe(task.id.as_str()) < 63)
        .unwrap();
    clock.advance(ttl * 2);
    let path = |s: usize| dir.path().join("locks").join(format!("{s:02}.lock"));
    let held: Vec<_> = [10, 20, 63]
        .iter()
        .map(|&s| {
            let lock = common::open_lock_file(&path(s));
            lock.lock().unwrap();
            lock
        })
        .collect();
    std::thread::scope(|s| {
        let sweep = s.spawn(|| sweeper.sweep());
        // Two writes that are brief: each let go once the sweep waits for it.
        for (lock, stripe) in held[..2].iter().zip([10, 20]) {
            common::wait_for_lock_waiter(&path(stripe), "the sweep to wait", || {
                sweep.is_finished()
            });
            lock.unlock().unwrap();
        }
        common::wait_for_lock_waiter(&path(63), "the sweep to wait for 63", || {
            sweep.is_finished()
        });
        let done = writer.complete(&live.id, json!("while the sweep waits"));
        held[2].unlock().unwrap();
        let swept = sweep.join().unwrap().unwrap();
        assert_eq!(swept.deleted, expired.len(), "{:?}", swept.missed);
        assert!(
            matches!(&done, Ok(t) if t.is_applied()),
            "the write (stripe {}) waited with the sweep: {done:?}",
            common::stripe(live.id.as_str())
        );
    });
}

/// The same where a sweep removes stale `expiring/` entries, which it does
/// under every stripe of those entries at once: entries left by another
/// process's sweep that removed its tasks' files from `done/` and was
/// stopped before it removed their entries (it leaves them to its end),
/// one of them of the stripe that stopped process holds. A write of a
/// task of another of those stripes goes on while the sweep waits. (The
/// sweep waited for stripe 63 holding the lower stripes of the entries.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_removing_stale_expiry_entries_holds_up_no_write_while_it_waits() {
    let (dir, clock, sweeper, writer) = sweeper_and_writer(Duration::from_secs(3));
    let ttl = Duration::from_secs(10);
    let finished_in = |stripe: usize| loop {
        let id = writer.create(NewTask::new().ttl(ttl)).unwrap().id;
        assert!(writer.complete(&id, json!(1)).unwrap().is_applied());
        if common::stripe(id.as_str()) == stripe {
            return id;
        }
    };
    // Their files gone from `done/`, their `expiring/` entries left.
    let low = finished_in(5);
    let high = finished_in(63);
    let live = std::iter::repeat_with(|| writer.create(NewTask::new()).unwrap())
        .find(|task| common::stripe(task.id.as_str()) == 5)
        .unwrap();
    clock.advance(ttl * 2);
    for id in [&low, &high] {
        fs::remove_file(dir.path().join("done").join(format!("{id}.json"))).unwrap();
    }
    let path = dir.path().join("locks").join("63.lock");
    let lock = common::open_lock_file(&path);
    lock.lock().unwrap();
    std::thread::scope(|s| {
        let sweep = s.spawn(|| sweeper.sweep());
        common::wait_for_lock_waiter(&path, "the sweep to wait for 63", || sweep.is_finished());
        let done = writer.complete(&live.id, json!("while the sweep waits"));
        lock.unlock().unwrap();
        sweep.join().unwrap().unwrap();
        assert!(
            matches!(&done, Ok(t) if t.is_applied()),
            "the write (stripe 5) waited with the sweep: {done:?}"
        );
    });
}

/// Three finished tasks with a TTL in the store in `dir`, expired by
/// `clock`, two of whose files are gone from `done/` with their
/// `expiring/` entries left: what a sweep killed before its end leaves.
/// The tasks, in the order made (the third's file is there).
fn killed_sweeps_leftovers(dir: &Path, clock: &ManualClock) -> Vec<taskstore::TaskId> {
    let ttl = Duration::from_secs(10);
    let ids = common::finished_with_ttl(&on_clock(dir, clock), 3, ttl);
    clock.advance(ttl * 2);
    for id in &ids[..2] {
        fs::remove_file(dir.join("done").join(format!("{id}.json"))).unwrap();
    }
    ids
}

/// A sweep counts the stale `expiring/` entries it removes in
/// `Swept::cleaned`: those another process's sweep left when it was killed
/// after removing their tasks' files from `done/` (it leaves the entries
/// to its end). An expired task it deletes is counted deleted, not
/// cleaned. (`cleaned` counted temp files and half-finished moves only,
/// and was 0 with the entries removed.)
#[test]
fn a_sweep_counts_the_stale_index_entries_it_removes_as_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = || on_clock(dir.path(), &clock);
    killed_sweeps_leftovers(dir.path(), &clock);
    let sweeper = open();
    let swept = sweeper.sweep().unwrap();
    assert_eq!((swept.deleted, swept.cleaned), (1, 2), "{swept:?}");
    assert_eq!(count(&dir.path().join("expiring")), 0);
    let swept = sweeper.sweep().unwrap();
    assert_eq!((swept.deleted, swept.cleaned), (0, 0), "{swept:?}");
}

/// `Store::expired`, a sweep's dry run, leaves the stale `expiring/`
/// entries it meets (a killed sweep's: their tasks' files gone from
/// `done/`) where they are, and the sweep after it counts them among the
/// leftovers it cleaned. (The dry run removed them, counting none: it
/// changed the store, and the sweep after it said it cleaned nothing.)
#[test]
fn a_sweeps_dry_run_leaves_stale_index_entries_for_the_sweep_to_count() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let open = || on_clock(dir.path(), &clock);
    let ids = killed_sweeps_leftovers(dir.path(), &clock);
    let sweeper = open();
    let expired: Vec<_> = sweeper
        .expired()
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(expired, [ids[2].clone()]);
    assert_eq!(
        count(&dir.path().join("expiring")),
        3,
        "the dry run leaves the stale entries"
    );
    let swept = sweeper.sweep().unwrap();
    assert_eq!((swept.deleted, swept.cleaned), (1, 2), "{swept:?}");
    assert_eq!(count(&dir.path().join("expiring")), 0);
}

/// A sweep beside writers of its own handle, six threads updating tasks of
/// every stripe without a pause, ends: its every-stripe chunks take the
/// stripes those writers hold for moments. (Its third try and after gave
/// up at once on a stripe another thread of the handle held, let go of
/// all, and started over, with no bound: the sweep ran for minutes.)
#[cfg(feature = "fault-injection")]
#[test]
fn a_sweep_beside_busy_writers_of_its_own_handle_ends() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap());
    let store = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Eventual)
        .large_passes_from(1)
        .open()
        .unwrap();
    let ttl = Duration::from_secs(10);
    let expired = common::finished_with_ttl(&store, 20, ttl);
    let live: Vec<taskstore::TaskId> = (0..64)
        .map(|stripe| {
            let id = common::id_in_stripe("live", stripe);
            store.create(NewTask::new().id(id.clone())).unwrap().id
        })
        .collect();
    clock.advance(ttl * 2);
    let (stop, writes) = (AtomicBool::new(false), AtomicUsize::new(0));
    let (store, live, stop, writes) = (&store, &live, &stop, &writes);
    std::thread::scope(|s| {
        for writer in 0..6 {
            s.spawn(move || {
                let mut n = writer * 21;
                while !stop.load(Ordering::Relaxed) {
                    let update = TaskUpdate::new().metadata("n", json!(n));
                    let updated = store.update(&live[n % live.len()], update).unwrap();
                    assert!(updated.is_applied(), "{updated:?}");
                    writes.fetch_add(1, Ordering::Relaxed);
                    n += 5;
                }
            });
        }
        let (sent, swept) = std::sync::mpsc::channel();
        s.spawn(move || {
            let _ = sent.send(store.sweep());
        });
        let swept = swept.recv_timeout(common::HANG);
        stop.store(true, Ordering::Relaxed);
        let swept = swept
            .unwrap_or_else(|_| {
                panic!(
                    "the sweep still runs after {:?}, beside {} writes",
                    common::HANG,
                    writes.load(Ordering::Relaxed)
                )
            })
            .unwrap();
        assert_eq!(swept.deleted, expired.len(), "{:?}", swept.missed);
    });
}
