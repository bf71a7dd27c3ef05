//! Taking several stripes at once (`StripeLocks::lock_each`) against a
//! holder that takes a stripe back before each try: its tries, and its
//! waits holding others cut to its pass.

use super::*;
use crate::file::fault::FaultInjector;
use crate::file::fs::FsOp;

/// Stripe locks in a fresh directory, through a fault seam, and the lock
/// file of stripe `held` opened by another open file description (which a
/// test makes take and let go of it): the directory (kept alive), the
/// seam, the file system, the locks, that file's path and the other's
/// file.
fn held_by_another(
    held: usize,
) -> (
    tempfile::TempDir,
    FaultInjector,
    Fs,
    StripeLocks,
    PathBuf,
    File,
) {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("locks")).unwrap();
    let faults = FaultInjector::new();
    let fs = Fs::with_faults(Some(faults.clone()));
    let dir = fs.open_root(&tmp.path().join("locks")).unwrap();
    let locks = StripeLocks::new(dir, Duration::from_secs(30));
    let path = locks.stripes[held].path.clone();
    let other = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    (tmp, faults, fs, locks, path, other)
}

/// [`StripeLocks::lock_each`] that meets one stripe held at every try
/// (taken by another open file description just before each try of it
/// with the stripes before it, as another process's passes over every
/// stripe, back to back, each longer than [`HOLDING_WAIT`], take it;
/// let go before each wait for it alone) gives up at its
/// [`MOST_TRIES`]th try, holding none, naming that stripe's lock file.
/// Each try of the stripe is held at the seam until the other holder
/// has taken or let it go. (It tried on for as long as it was held up:
/// here, the other let it go after 7 tries.)
#[test]
fn taking_stripes_held_up_again_and_again_gives_up_after_its_tries() {
    let held = 5;
    let (_tmp, faults, fs, locks, path, other) = held_by_another(held);
    // Past this, the other lets go for good.
    let enough = MOST_TRIES + 2;
    let (tries, taken) = std::thread::scope(|s| {
        let mut pause = faults.pause_at(FsOp::Lock, &path);
        let taking = s.spawn(|| locks.lock_all(&fs, None).map(|guards| guards.len()));
        let mut tries = 0;
        // Odd calls: a try of it with the stripes before it (the
        // other takes it first); even: a wait for it alone (the other
        // lets it go first).
        for call in 1.. {
            if !pause.wait_reached(|| !taking.is_finished()) {
                break;
            }
            let with_the_others = call % 2 == 1;
            if with_the_others {
                tries += 1;
            }
            if with_the_others && tries <= enough {
                other.lock().unwrap();
            } else {
                other.unlock().unwrap();
            }
            let next = faults.pause_at(FsOp::Lock, &path);
            pause.resume();
            pause = next;
        }
        other.unlock().unwrap();
        faults.disarm();
        (tries, taking.join().unwrap())
    });
    assert_eq!(tries, MOST_TRIES, "{taken:?}");
    match taken {
        Err(e) => {
            assert!(ran_out(&e), "{e}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
        Ok(n) => panic!("took all {n} stripes"),
    }
    // It holds none: every stripe is free.
    for stripe in &locks.stripes {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&stripe.path)
            .unwrap();
        file.try_lock().unwrap();
    }
}

/// [`StripeLocks::lock_each`] of one stripe (a repair's removal of a stale
/// `expiring/` entry) that finds it held, and then gets it by waiting for
/// it alone, keeps it: taken back by another open file description before
/// each try with the stripes before it (none here), and let go before each
/// wait for it alone, it is tried twice, and held. Each try is held at the
/// seam until the other holder has taken or let it go. (It let go of what
/// its wait got and tried again from the first: held up at each try, it
/// failed after [`MOST_TRIES`] tries, 9 calls.)
#[test]
fn taking_one_stripe_keeps_what_its_wait_for_it_got() {
    let held = 9;
    let (_tmp, faults, fs, locks, path, other) = held_by_another(held);
    let (calls, taken) = std::thread::scope(|s| {
        let mut pause = faults.pause_at(FsOp::Lock, &path);
        let taking = s.spawn(|| {
            locks.lock_each(&fs, &[held], None).map(|guards| {
                // Held by this call: the other cannot take it.
                let others = other.try_lock().is_ok();
                (guards.len(), others)
            })
        });
        let mut calls = 0;
        // Odd calls: a try of it with the stripes before it (the other
        // takes it first); even: a wait for it alone (the other lets it
        // go first).
        for call in 1.. {
            if !pause.wait_reached(|| !taking.is_finished()) {
                break;
            }
            calls = call;
            if call % 2 == 1 {
                other.lock().unwrap();
            } else {
                other.unlock().unwrap();
            }
            let next = faults.pause_at(FsOp::Lock, &path);
            pause.resume();
            pause = next;
        }
        faults.disarm();
        let taken = taking.join().unwrap();
        other.unlock().unwrap();
        (calls, taken)
    });
    assert_eq!(
        (calls, taken.as_ref().ok()),
        (2, Some(&(1, false))),
        "the tries of the stripe, and what was taken: {taken:?}"
    );
}

/// [`StripeLocks::lock_each`]'s wait for a stripe holding those before it
/// (from its [`ALL_TRIES`]th try) lasts what is left of its pass at most,
/// not [`HOLDING_WAIT`]: in a pass whose deadline has come (its waits
/// spent), a stripe taken by another open file description before each
/// of the first three tries with the stripes before it, and let go before
/// each wait for it alone, is tried at the third without a wait, then
/// taken by its wait alone, and at the fourth with the others. Each try
/// of the stripe is held at the seam until the other holder has taken or
/// let it go; counted there, no descriptor opened for a wait for it.
/// (With the wait not cut to the pass, it waited [`HOLDING_WAIT`] holding
/// the others, on a descriptor of its own.)
#[test]
fn a_wait_holding_other_stripes_lasts_what_is_left_of_the_pass_at_most() {
    let held = 5;
    let (_tmp, faults, fs, locks, path, other) = held_by_another(held);
    // The stripe's file opened by the locks before the count.
    drop(locks.lock(&fs, held).unwrap());
    let pass = Pass::default();
    pass.deadline
        .set(Some(Instant::now()))
        .expect("a new pass's deadline is unset");
    let waits = faults.count_at(FsOp::Create, &path);
    let (calls, taken) = std::thread::scope(|s| {
        let mut pause = faults.pause_at(FsOp::Lock, &path);
        let taking = s.spawn(|| {
            locks
                .lock_each(&fs, &(0..=held).collect::<Vec<_>>(), Some(&pass))
                .map(|guards| guards.len())
        });
        let mut calls = 0;
        // Odd calls: a try of it with the stripes before it (the other
        // takes it first, at the first three); even: a wait for it alone
        // (the other lets it go first).
        for call in 1.. {
            if !pause.wait_reached(|| !taking.is_finished()) {
                break;
            }
            calls = call;
            if call % 2 == 1 && call < 2 * ALL_TRIES {
                other.lock().unwrap();
            } else {
                other.unlock().unwrap();
            }
            let next = faults.pause_at(FsOp::Lock, &path);
            pause.resume();
            pause = next;
        }
        faults.disarm();
        let taken = taking.join().unwrap();
        other.unlock().unwrap();
        (calls, taken)
    });
    assert_eq!(
        (calls, taken.as_ref().ok(), waits.calls()),
        (2 * ALL_TRIES + 1, Some(&(held + 1)), 0),
        "the tries of the stripe, the stripes taken, and the descriptors opened for a wait: \
         {taken:?}"
    );
}
