//! Removal batches beside stripes stopped processes hold: a batch waits its
//! `stripe_wait` once in all, its tries of every stripe and its tries again
//! of a stripe whose lock failed included.

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
