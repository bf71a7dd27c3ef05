//! Calls held inside a task's stripe against the others that want it: a sweep
//! about to unlink an expired file and a writer recreating the task, an orphan
//! held mid reap or claim and its owner and a second claimer, a write behind
//! another thread's wait.

use super::*;

/// Expired tasks in the sweep: enough that it reads and removes them as it
/// meets them, under every stripe, in one chunk.
const EXPIRED: usize = 300;

/// A sweep that has read an expired task and is about to unlink its file
/// holds every stripe: another handle's create of a task under the same id
/// (and, for a finished task, its completion) waits for it, and so lands
/// after the unlink, never under it. For finished tasks (the sweep's pass
/// over the `expiring/` entries that are due), running ones its handle had
/// not read (its pass over the new files) and running ones it knew (its
/// scan's batches, which prove each file unchanged under the locks). The
/// recreated task reads back, from every handle; the sweep counts the old
/// one, and every other expired task is gone.
#[test]
fn a_sweep_about_to_unlink_an_expired_file_holds_off_a_writer_recreating_its_task() {
    for (finished, known) in [(true, false), (false, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let sweeper = open(dir.path(), &clock, Some(&faults));
        // A running task the sweep reads as a new file only if its handle
        // follows `active/` from before it was made.
        assert!(sweeper.list(&ListQuery::active()).unwrap().tasks.is_empty());
        let writer = open(dir.path(), &clock, None);
        let ttl = Duration::from_secs(60);
        let ids: Vec<_> = (0..EXPIRED)
            .map(|n| {
                let task = writer.create(NewTask::new().ttl(ttl)).unwrap();
                if finished {
                    assert!(writer.complete(&task.id, json!(n)).unwrap().is_applied());
                }
                task.id
            })
            .collect();
        if known {
            let listed = sweeper.list(&ListQuery::active()).unwrap().tasks;
            assert_eq!(listed.len(), EXPIRED);
        }
        clock.advance(ttl * 2);

        let raced = ids[EXPIRED / 3].clone();
        let area = if finished { "done" } else { "active" };
        let file = dir.path().join(area).join(format!("{raced}.json"));
        let held = faults.pause_at(FsOp::Remove, &file);
        let swept = std::thread::scope(|s| {
            // Owned here, so that a failed assertion lets the held call
            // on as it unwinds, and the scope's threads end.
            let held = held;
            let sweep = s.spawn(|| sweeper.sweep().unwrap());
            assert!(
                held.wait_reached(|| !sweep.is_finished()),
                "the sweep never made the held call"
            );
            let (done, finished_writing) = mpsc::channel();
            let (writer, raced) = (&writer, &raced);
            let write = s.spawn(move || {
                let again = writer
                    .create(NewTask::new().id(raced.clone()).ttl(ttl * 10))
                    .unwrap();
                let again = if finished {
                    writer
                        .complete(&again.id, json!("again"))
                        .unwrap()
                        .into_task()
                } else {
                    again
                };
                done.send(()).unwrap();
                again
            });
            // Either way the sweep goes on, and what the two leave is
            // checked below.
            common::wait_for_lock_waiter(
                &common::stripe_lock(dir.path(), raced.as_str()),
                "the writer to wait for the sweep, or finish",
                || finished_writing.try_recv().is_ok(),
            );
            held.resume();
            let again = write.join().unwrap();
            (sweep.join().unwrap(), again)
        });
        let (swept, again) = swept;
        let what = match (finished, known) {
            (true, _) => "finished",
            (false, false) => "running, new to the sweeper",
            (false, true) => "running, known to the sweeper",
        };
        assert!(
            swept.missed.is_empty() && swept.skipped.is_empty(),
            "{what}: {swept:?}"
        );
        assert_eq!(swept.deleted, EXPIRED, "{what}: the old task is counted");
        let want: Task = again;
        assert_eq!(want.revision, if finished { 2 } else { 1 });
        assert_eq!(
            want.status,
            if finished {
                TaskStatus::Completed
            } else {
                TaskStatus::Working
            }
        );
        for reader in [&sweeper, &writer, &open(dir.path(), &clock, None)] {
            assert_eq!(
                reader.get(&raced).unwrap().as_ref(),
                Some(&want),
                "{what}: the task recreated during the sweep reads back"
            );
            for id in ids.iter().filter(|id| **id != raced) {
                assert_eq!(reader.get(id).unwrap(), None, "{what}: {id}");
            }
        }
        // Nothing of the old task is left: one file, and (finished) one
        // `expiring/` entry, the new task's.
        let fresh = open(dir.path(), &clock, None);
        let listed = if finished {
            fresh.list(&ListQuery::all()).unwrap().tasks
        } else {
            fresh.list(&ListQuery::active()).unwrap().tasks
        };
        assert_eq!(listed, [want], "{what}");
        let entries = std::fs::read_dir(dir.path().join("expiring"))
            .unwrap()
            .count();
        assert_eq!(entries, usize::from(finished), "{what}");
    }
}

/// What races a reap or claim held just before it writes its orphan.
#[derive(Clone, Copy, Debug)]
enum Racer {
    /// The owner, renewing its lease (its clock says the lease is live).
    Renew,
    /// The owner, completing the task.
    Complete,
    /// A second instance, claiming the same orphan.
    Claim,
}

/// A reap (or claim) writes an orphan only if it is still the version it
/// judged lapsed, and decides that under the task's lock: held just before
/// it writes, its owner's renewal or completion, or a second claimer,
/// waits, and then finds the task reaped (or claimed) and changes nothing:
/// the renewal and the completion are refused as the task is terminal, the
/// second claim claims nothing, and the owner's renewal after a claim is
/// refused as no longer its own. No one is told a write of theirs stood
/// that the store does not hold.
#[test]
fn an_orphan_held_mid_reap_or_claim_holds_off_its_owner_and_a_second_claimer() {
    let t0 = datetime!(2030-01-01 0:00 UTC);
    for racer in [Racer::Renew, Racer::Complete, Racer::Claim] {
        let dir = tempfile::tempdir().unwrap();
        let at = |clock: &ManualClock, instance: &str, faults: Option<&FaultInjector>| {
            let mut builder = FileStore::builder(dir.path())
                .clock(Arc::new(clock.clone()))
                .instance_id(instance)
                .lease(Duration::from_secs(30));
            if let Some(faults) = faults {
                builder = builder.fault_injector(faults.clone());
            }
            builder.open().unwrap()
        };
        // The owner's clock stands still: its lease is live to it. The
        // others' is an hour on: lapsed, and past any claim grace.
        let (owner_clock, later) = (ManualClock::new(t0), ManualClock::new(t0));
        later.advance(Duration::from_secs(3_600));
        let owner = at(&owner_clock, "owner", None);
        let task = match racer {
            Racer::Claim => NewTask::new().resumable("job", json!({"n": 1})),
            _ => NewTask::new(),
        };
        let orphan = owner.create(task).unwrap();
        assert_eq!(orphan.owner.as_deref(), Some("owner"));
        let faults = FaultInjector::new();
        let first = at(&later, "first", Some(&faults));
        let second = at(&later, "second", None);

        let file = dir
            .path()
            .join("active")
            .join(format!("{}.json", orphan.id));
        let held = faults.pause_at(FsOp::Rename, &file);
        let what = format!("{racer:?}");
        let (pass, raced) = std::thread::scope(|s| {
            let held = held; // owned here: see the sweep test
            let (first, second, owner, id) = (&first, &second, &owner, &orphan.id);
            let pass = s.spawn(move || match racer {
                Racer::Claim => first.claim(&["job"]).unwrap(),
                _ => first.reap().unwrap(),
            });
            assert!(
                held.wait_reached(|| !pass.is_finished()),
                "{what}: the pass never made the held call"
            );
            let (done, raced) = mpsc::channel();
            let race = s.spawn(move || {
                let got = match racer {
                    Racer::Renew => Ok(owner.renew_lease(id).unwrap()),
                    Racer::Complete => Ok(owner.complete(id, json!("mine")).unwrap()),
                    Racer::Claim => Err(second.claim(&["job"]).unwrap()),
                };
                done.send(()).unwrap();
                got
            });
            common::wait_for_lock_waiter(
                &common::stripe_lock(dir.path(), id.as_str()),
                &format!("{what}: the racer to wait for the pass, or finish"),
                || raced.try_recv().is_ok(),
            );
            held.resume();
            (pass.join().unwrap(), race.join().unwrap())
        });
        assert!(
            pass.missed.is_empty() && pass.skipped.is_empty(),
            "{what}: {pass:?}"
        );
        assert_eq!(pass.tasks.len(), 1, "{what}: {pass:?}");
        let want = pass.tasks[0].clone();
        assert_eq!(want.id, orphan.id);
        assert_eq!(want.revision, orphan.revision + 1, "{what}");
        match raced {
            Ok(transition) => {
                assert!(!transition.is_applied(), "{what}: {transition:?}");
                assert_eq!(transition.into_task(), want, "{what}");
                assert_eq!(want.status, TaskStatus::Failed, "{what}");
                assert_eq!(want.error.as_ref().unwrap()["code"], "orphaned", "{what}");
            }
            Err(claimed) => {
                assert!(claimed.tasks.is_empty(), "{what}: {claimed:?}");
                assert_eq!(want.owner.as_deref(), Some("first"), "{what}");
                assert_eq!(want.epoch, orphan.epoch + 1, "{what}");
                // The owner it was taken from may no longer write it.
                assert!(
                    owner
                        .renew_lease(&orphan.id)
                        .is_err_and(|e| matches!(e, taskstore::Error::NotOwner { .. })),
                    "{what}"
                );
            }
        }
        for reader in [&owner, &first, &second] {
            assert_eq!(
                reader.get(&orphan.id).unwrap().as_ref(),
                Some(&want),
                "{what}"
            );
        }
    }
}

/// A call of a handle waits for a stripe its `stripe_wait` at most, even
/// behind another thread of the handle that waits for it (or holds it): a
/// write of b, while another thread's write of a (both in stripe 7) waits
/// for the stripe a stopped process holds, fails when its own wait runs
/// out, naming the lock, while the other still waits. The other is held at
/// the seam as it opens the descriptor it waits on, so that its wait
/// outlasts b's, whatever the timing. Once the stopped process is gone, it
/// goes on, and its write is applied. (The write of b queued on the
/// stripe's in-process lock, held through the other's whole wait, with no
/// deadline of its own: it returned only once the other had.)
#[cfg(target_os = "linux")]
#[test]
fn a_write_behind_another_threads_wait_for_a_stripe_gives_up_at_its_own_wait() {
    use taskstore::TaskUpdate;
    let test = "stripes::a_write_behind_another_threads_wait_for_a_stripe_gives_up_at_its_own_wait";
    common::hold_locks_if_the_holder();
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let faults = FaultInjector::new();
    let store = FileStore::builder(root)
        .fault_injector(faults.clone())
        .stripe_wait(Duration::from_millis(300))
        .open()
        .unwrap();
    let [a, b] = [common::id_in_stripe("a", 7), common::id_in_stripe("b", 7)];
    // The handle opens the stripe's lock file here: the next file it opens
    // at that path is a wait's own descriptor.
    for id in [&a, &b] {
        store.create(NewTask::new().id(id.clone())).unwrap();
    }
    let lock = common::stripe_lock(root, a.as_str());
    let mut holder = common::stopped_holding(test, dir.path(), &lock);
    let waiting = faults.pause_at(FsOp::Create, &lock);
    let update = |n: i64| TaskUpdate::new().metadata("n", json!(n));
    std::thread::scope(|s| {
        let first = s.spawn(|| store.update(&a, update(1)));
        assert!(
            waiting.wait_reached(|| !first.is_finished()),
            "the write of a never came to wait for the stripe"
        );
        let (sent, second) = mpsc::channel();
        let (store, b) = (&store, &b);
        s.spawn(move || {
            let _ = sent.send(store.update(b, update(2)));
        });
        let second = second.recv_timeout(common::HANG);
        let still_waiting = !first.is_finished();
        // Let go before any assertion: the first write ends either way.
        holder.kill();
        waiting.resume();
        let first = first.join().unwrap();
        let second = second.expect("the write of b waited for the other thread's wait");
        assert!(still_waiting, "b's write returned only after a's did");
        let said = second.expect_err("b's stripe is held").to_string();
        assert!(said.contains("locks/07.lock"), "{said}");
        assert!(matches!(&first, Ok(t) if t.is_applied()), "{first:?}");
    });
}
