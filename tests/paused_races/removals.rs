//! Removal batches beside stripes stopped processes hold: a batch waits its
//! `stripe_wait` once in all, its tries of every stripe and its tries again
//! of a stripe whose lock failed included; and so does a sweep's every
//! taking of several stripes at once, beside busy ones.

use super::*;

/// A large removal batch (one that takes every stripe's lock at once)
/// whose try of every stripe gives up goes stripe by stripe in the same
/// pass: a `remove_all` of a (stripe 7) and x (stripe 33), running, beside
/// a stopped process that holds a's stripe, waits for a its whole
/// `stripe_wait` once (in its try of every stripe), then tries it once
/// more, without waiting, and removes x. Counted at the file-system seam:
/// a's lock file tried three times (before the wait, by it, and after it)
/// and one descriptor opened for a wait. (The try of every stripe waited
/// outside the batch's pass, whose deadline started only with its next
/// wait: a's stripe was then polled for 100 ms more.)
#[cfg(target_os = "linux")]
#[test]
fn a_large_removal_batch_whose_try_of_every_stripe_gave_up_waits_once_in_all() {
    use taskstore::backend::Backend;
    let test =
        "removals::a_large_removal_batch_whose_try_of_every_stripe_gave_up_waits_once_in_all";
    common::hold_locks_if_the_holder();
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let remover = waiting_briefly(root, &clock, &faults)
        .large_passes_from(2)
        .open()
        .unwrap();
    let [a, x] = [common::id_in_stripe("a", 7), common::id_in_stripe("x", 33)];
    let tasks: Vec<Task> = [&a, &x]
        .map(|id| remover.create(NewTask::new().id(id.clone())).unwrap())
        .into();
    let held_a = common::stripe_lock(root, a.as_str());
    let _holding_a = common::stopped_holding(test, dir.path(), &held_a);
    let tries = faults.count_at(FsOp::Lock, &held_a);
    let waits = faults.count_at(FsOp::Create, &held_a);
    let removed = remover.backend().remove_all(&tasks);
    assert!(
        matches!(&removed[0], Err(e) if e.to_string().contains(&held_a.display().to_string())),
        "{removed:?}"
    );
    assert!(
        matches!(removed[1], Ok(taskstore::backend::Swap::Done)),
        "{removed:?}"
    );
    assert_eq!(
        (tries.calls(), waits.calls()),
        (3, 1),
        "the batch's tries of a's stripe, and its waits for it"
    );
    assert!(remover.get(&a).unwrap().is_some());
    assert_eq!(remover.get(&x).unwrap(), None);
}

/// A removal batch whose lock of a stripe failed (not a wait that ran
/// out: an I/O error) tries it again for each task of the stripe in the
/// batch's pass: a `remove_all` of a (stripe 7) and x and y (both stripe
/// 33), running, beside stopped processes that hold both stripes, waits for
/// a its whole `stripe_wait`, meets an I/O error trying x's stripe, and
/// tries it again for x and for y once each, without waiting (the batch's
/// one deadline has passed). Counted at the file-system seam: no
/// descriptor opened for a wait for x's stripe. (Each task tried it with
/// a plain lock, outside the pass: x waited a whole `stripe_wait` more,
/// one descriptor opened, and y polled it for 100 ms more.)
#[cfg(target_os = "linux")]
#[test]
fn a_removal_batch_tries_a_stripe_whose_lock_failed_again_within_its_pass() {
    use taskstore::backend::Backend;
    let test = "removals::a_removal_batch_tries_a_stripe_whose_lock_failed_again_within_its_pass";
    common::hold_locks_if_the_holder();
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let remover = waiting_briefly(root, &clock, &faults).open().unwrap();
    let x = common::id_in_stripe("x", 33);
    let y = (0..)
        .map(|n| common::id_in_stripe(&format!("y{n}"), 33))
        .find(|id| *id != x)
        .unwrap();
    let a = common::id_in_stripe("a", 7);
    let tasks: Vec<Task> = [&a, &x, &y]
        .map(|id| remover.create(NewTask::new().id(id.clone())).unwrap())
        .into();
    let [held_a, held_x] = [&a, &x].map(|id| common::stripe_lock(root, id.as_str()));
    let _holding = common::KilledOnDrop::new(common::stopped_holder(
        test,
        dir.path(),
        &[held_a.clone(), held_x.clone()],
    ));
    // The batch's first try of x's stripe, held at the seam, then failed.
    let first_try = faults.pause_at(FsOp::Lock, &held_x);
    let waits = faults.count_at(FsOp::Create, &held_x);
    let removed = std::thread::scope(|s| {
        let first_try = first_try;
        let removing = s.spawn(|| remover.backend().remove_all(&tasks));
        assert!(
            first_try.wait_reached(|| !removing.is_finished()),
            "the batch never tried x's stripe"
        );
        faults.fail_nth(1, taskstore::Fault::Eio, taskstore::FaultMode::Once);
        first_try.resume();
        removing.join().unwrap()
    });
    for (result, lock) in removed.iter().zip([&held_a, &held_x, &held_x]) {
        assert!(
            matches!(result, Err(e) if e.to_string().contains(&lock.display().to_string())),
            "{removed:?}"
        );
    }
    assert_eq!(waits.calls(), 0, "the batch's waits for x's stripe");
    for id in [&a, &x, &y] {
        assert!(remover.get(id).unwrap().is_some());
    }
}

/// Where a sweep takes several stripes at once, outside its batches
/// (`StripeLocks::lock_each`).
#[derive(Clone, Copy, Debug)]
enum Taking {
    /// Its chunk of new files it has not read (`remove_unread`).
    NewFiles,
    /// Its chunk of finished tasks due by their `expiring/` entries
    /// (`remove_due`).
    DueEntries,
    /// Its removal of stale `expiring/` entries (`drop_stale_indexes`).
    StaleEntries,
}

/// A sweep's taking of several stripes at once (every stripe, for its
/// chunk of new files or of due entries; the stripes of the stale
/// `expiring/` entries it removes) waits its `stripe_wait` (here 1 s, as
/// long as a wait holding other stripes) once in all: beside two busy
/// stripes (10 and 20, each let go once the sweep waits for it, so that
/// it takes the stripes a third time, waiting for each holding those
/// before it) and a stopped process that holds stripe 63, its wait for
/// 63 holding the others ends at its deadline, and it then tries 63 once
/// more without waiting. Counted at the file-system seam: one descriptor
/// opened for a wait for 63 in the whole sweep (its batches try 63 once
/// more each, in the sweep's pass, without waiting). (Those takings
/// waited outside any pass: 1 s for 63 holding the others, then a whole
/// `stripe_wait` more for 63 alone, two descriptors.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweeps_taking_of_several_stripes_waits_its_stripe_wait_once_in_all() {
    let test = "removals::a_sweeps_taking_of_several_stripes_waits_its_stripe_wait_once_in_all";
    common::hold_locks_if_the_holder();
    let ttl = Duration::from_secs(10);
    let mut waited = Vec::new();
    for taking in [Taking::NewFiles, Taking::DueEntries, Taking::StaleEntries] {
        let dir = tempfile::tempdir().unwrap();
        let root = &dir.path().join("store");
        let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
        let faults = FaultInjector::new();
        let mut builder =
            waiting_briefly(root, &clock, &faults).stripe_wait(Duration::from_secs(1));
        if !matches!(taking, Taking::StaleEntries) {
            // Its three tasks make a large pass: taken under every stripe.
            builder = builder.large_passes_from(2);
        }
        let sweeper = builder.open().unwrap();
        // Stripe 63's lock file opened by the sweeper before the count.
        sweeper
            .create(NewTask::new().id(common::id_in_stripe("live", 63)))
            .unwrap();
        if matches!(taking, Taking::NewFiles) {
            // Listed: the files made after, it reads itself in its sweep.
            assert_eq!(sweeper.list(&ListQuery::active()).unwrap().tasks.len(), 1);
        }
        let writer = open(root, &clock, None);
        let ids: Vec<TaskId> = [10, 20, 63]
            .map(|stripe| {
                let id = common::id_in_stripe("expired", stripe);
                writer
                    .create(NewTask::new().id(id.clone()).ttl(ttl))
                    .unwrap();
                if !matches!(taking, Taking::NewFiles) {
                    assert!(writer.complete(&id, json!(1)).unwrap().is_applied());
                }
                if matches!(taking, Taking::StaleEntries) {
                    // What a sweep killed before its end leaves: the file
                    // gone from `done/`, its entry left.
                    std::fs::remove_file(root.join("done").join(format!("{id}.json"))).unwrap();
                }
                id
            })
            .into();
        clock.advance(ttl * 2);
        let lock = |stripe: usize| root.join("locks").join(format!("{stripe:02}.lock"));
        let busy = [10, 20].map(|stripe| {
            let file = common::open_lock_file(&lock(stripe));
            file.lock().unwrap();
            file
        });
        let _holding = common::stopped_holding(test, dir.path(), &lock(63));
        let waits = faults.count_at(FsOp::Create, lock(63));
        let swept = std::thread::scope(|s| {
            let sweeping = s.spawn(|| sweeper.sweep());
            for (file, stripe) in busy.iter().zip([10, 20]) {
                common::wait_for_lock_waiter(
                    &lock(stripe),
                    "the sweep to wait for a busy stripe",
                    || sweeping.is_finished(),
                );
                file.unlock().unwrap();
            }
            sweeping.join().unwrap()
        })
        .unwrap();
        waited.push((format!("{taking:?}"), waits.calls()));
        if !matches!(taking, Taking::StaleEntries) {
            let missed: Vec<&TaskId> = swept.missed.iter().map(|m| &m.id).collect();
            assert_eq!(missed, [&ids[2]], "{taking:?}: {swept:?}");
            assert_eq!(swept.deleted, 2, "{taking:?}: {swept:?}");
        }
    }
    assert_eq!(
        waited,
        [("NewFiles", 1), ("DueEntries", 1), ("StaleEntries", 1)].map(|(t, n)| (t.to_owned(), n)),
        "the sweep's waits for stripe 63"
    );
}
