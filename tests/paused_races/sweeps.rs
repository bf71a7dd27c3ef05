//! A sweep beside a stripe a stopped process holds: its waits for stripes,
//! from its first call of the backend to its last, are one pass, which
//! waits its `stripe_wait` once in all; a stripe found stuck is tried again
//! in it, never waited for.

use super::*;

use std::path::PathBuf;

/// A store at `root` through `faults` whose sweeps wait for a held stripe
/// 1 s in all, taking every stripe at once from `large` tasks if given,
/// and which opened stripe 63's lock file (a task made there) before a
/// test counts its tries.
fn sweeper(
    root: &Path,
    clock: &ManualClock,
    faults: &FaultInjector,
    large: Option<usize>,
) -> FileStore {
    let mut builder = waiting_briefly(root, clock, faults).stripe_wait(Duration::from_secs(1));
    if let Some(large) = large {
        builder = builder.large_passes_from(large);
    }
    let sweeper = builder.open().unwrap();
    sweeper
        .create(NewTask::new().id(common::id_in_stripe("live", 63)))
        .unwrap();
    sweeper
}

/// The lock file of stripe `stripe` in the store at `root`.
fn lock(root: &Path, stripe: usize) -> PathBuf {
    root.join("locks").join(format!("{stripe:02}.lock"))
}

/// A sweep that meets stripe 63, held by a stopped process, in every part
/// of it (its chunk of new files it has not read, its chunk of finished
/// tasks due by their `expiring/` entries, its scan's removal of stale
/// entries, its batch's removals) waits for 63 once, in its first part, its
/// whole `stripe_wait` (1 s); every later part tries 63 without waiting.
/// Counted at the file-system seam: one descriptor opened for a wait for
/// 63, and nine tries of its lock: two by the chunk of new files (its try
/// of every stripe, its wait's), two by the chunk of due entries, two by
/// the removal of stale entries, three by the batch (its try of every
/// stripe, then its wait for the moves of finished tasks to be over). The
/// tasks of 63 are missed, the others deleted; the stale entries (of
/// stripes 30 and 63, removed together) are left to the next sweep.
/// (Each part waited in a pass of its own: 63, stuck, was polled for
/// 100 ms by the chunk of due entries, the removal of stale entries and
/// the batch, more tries each.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_waits_for_a_stuck_stripe_once_in_all_its_parts() {
    let test = "sweeps::a_sweep_waits_for_a_stuck_stripe_once_in_all_its_parts";
    common::hold_locks_if_the_holder();
    let ttl = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    // Two tasks make a large pass: its chunks taken under every stripe.
    let sweeper = sweeper(root, &clock, &faults, Some(2));
    // Listed, so that the files made after are new files it reads in its
    // sweep.
    assert_eq!(sweeper.list(&ListQuery::active()).unwrap().tasks.len(), 1);
    let writer = open(root, &clock, None);
    let make = |prefix: &str, stripe: usize, finished: bool| {
        let id = common::id_in_stripe(prefix, stripe);
        writer
            .create(NewTask::new().id(id.clone()).ttl(ttl))
            .unwrap();
        if finished {
            assert!(writer.complete(&id, json!(1)).unwrap().is_applied());
        }
        id
    };
    let running = [10, 63].map(|stripe| make("running", stripe, false));
    let finished = [20, 63].map(|stripe| make("finished", stripe, true));
    // What a sweep killed before its end leaves: the file gone from
    // `done/`, its entry left.
    let stale = [30, 63].map(|stripe| {
        let id = make("stale", stripe, true);
        std::fs::remove_file(root.join("done").join(format!("{id}.json"))).unwrap();
        id
    });
    let stale_entries = |stripe: usize| {
        let id = &stale[usize::from(stripe == 63)];
        std::fs::read_dir(root.join("expiring"))
            .unwrap()
            .filter(|entry| {
                let name = entry.as_ref().unwrap().file_name();
                name.to_string_lossy().contains(id.as_str())
            })
            .count()
    };
    assert_eq!((stale_entries(30), stale_entries(63)), (1, 1));
    clock.advance(ttl * 2);
    let _holding = common::stopped_holding(test, dir.path(), &lock(root, 63));
    let tries = faults.count_at(FsOp::Lock, lock(root, 63));
    let waits = faults.count_at(FsOp::Create, lock(root, 63));
    let swept = sweeper.sweep().unwrap();
    assert_eq!(
        (waits.calls(), tries.calls()),
        (1, 9),
        "the sweep's waits for stripe 63, and its tries of it: {swept:?}"
    );
    let mut missed: Vec<&TaskId> = swept.missed.iter().map(|m| &m.id).collect();
    missed.sort();
    let mut of_63 = vec![&running[1], &finished[1]];
    of_63.sort();
    assert_eq!(missed, of_63, "{swept:?}");
    for error in swept.missed.iter().map(|m| &m.error) {
        assert!(
            error
                .to_string()
                .contains(&lock(root, 63).display().to_string()),
            "{error}"
        );
    }
    assert_eq!(swept.deleted, 2, "{swept:?}");
    for id in [&running[0], &finished[0]] {
        assert_eq!(sweeper.get(id).unwrap(), None);
    }
    assert_eq!((stale_entries(30), stale_entries(63)), (1, 1));
}

/// A sweep that meets corrupt files of stripe 63, held by a stopped
/// process (two in `active/`, two in `done/` found by their `expiring/`
/// entries), waits for 63 to set them aside once, for the first, its
/// whole `stripe_wait` (1 s); each after is tried once without waiting,
/// and reported left in place, naming the lock. Counted at the
/// file-system seam: one descriptor opened for a wait for 63, and four
/// tries of its lock, one by each set-aside.
/// (The set-asides waited outside any pass: each after the first polled
/// 63, stuck, for 100 ms, more tries each.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweeps_set_asides_wait_for_a_held_stripe_once_in_all() {
    let test = "sweeps::a_sweeps_set_asides_wait_for_a_held_stripe_once_in_all";
    common::hold_locks_if_the_holder();
    let ttl = Duration::from_secs(10);
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let sweeper = sweeper(root, &clock, &faults, None);
    let corrupt = |path: PathBuf| {
        // In place: a file of `done/` stays its `expiring/` entry's inode.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::write(&path, b"not a task").unwrap();
    };
    let mut bad = Vec::new();
    for prefix in ["active-a", "active-b"] {
        let id = common::id_in_stripe(prefix, 63);
        sweeper.create(NewTask::new().id(id.clone())).unwrap();
        bad.push((id, "active"));
    }
    for prefix in ["done-a", "done-b"] {
        let id = common::id_in_stripe(prefix, 63);
        sweeper
            .create(NewTask::new().id(id.clone()).ttl(ttl))
            .unwrap();
        assert!(sweeper.complete(&id, json!(1)).unwrap().is_applied());
        bad.push((id, "done"));
    }
    for (id, area) in &bad {
        corrupt(root.join(area).join(format!("{id}.json")));
    }
    clock.advance(ttl * 2);
    let _holding = common::stopped_holding(test, dir.path(), &lock(root, 63));
    let tries = faults.count_at(FsOp::Lock, lock(root, 63));
    let waits = faults.count_at(FsOp::Create, lock(root, 63));
    let swept = sweeper.sweep().unwrap();
    assert_eq!(
        (waits.calls(), tries.calls()),
        (1, 4),
        "the sweep's waits for stripe 63, and its tries of it: {swept:?}"
    );
    for (id, area) in &bad {
        let report = swept
            .skipped
            .iter()
            .find(|s| s.id.as_ref() == Some(id))
            .unwrap_or_else(|| panic!("{id} not reported: {swept:?}"));
        assert_eq!(
            report.action,
            taskstore::UnreadableAction::LeftInPlace,
            "{report:?}"
        );
        assert!(
            report
                .reason
                .contains(&lock(root, 63).display().to_string()),
            "{report:?}"
        );
        assert!(root.join(area).join(format!("{id}.json")).exists());
    }
}

/// A sweep that finishes interrupted terminal moves (finished tasks left
/// in `active/` by a writer killed between the two steps of its move),
/// one of them of stripe 63, held by a stopped process, finishes the
/// others and leaves 63's, final for every reader, for a later sweep: it
/// waits for 63 once, in its chunk of new files, and tries it without
/// waiting when it finishes the moves (one descriptor opened for a wait,
/// three tries: two by the chunk, one by the finishing); the sweep
/// answers. (A stripe that could not be taken ended the finishing there,
/// and failed the whole sweep with the lock's error: the moves after 63's
/// were left too; and the finishing waited outside the sweep's pass,
/// polling 63 for 100 ms: ten tries.)
#[cfg(target_os = "linux")]
#[test]
fn a_sweep_finishes_the_moves_a_held_stripe_does_not_hold_up() {
    let test = "sweeps::a_sweep_finishes_the_moves_a_held_stripe_does_not_hold_up";
    common::hold_locks_if_the_holder();
    let dir = tempfile::tempdir().unwrap();
    let root = &dir.path().join("store");
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    // Two tasks make a large pass: its chunk of new files, before the
    // moves are finished, taken under every stripe.
    let sweeper = sweeper(root, &clock, &faults, Some(2));
    assert_eq!(sweeper.list(&ListQuery::active()).unwrap().tasks.len(), 1);
    let writer = open(root, &clock, None);
    // Stripe 63's first in the order the moves are finished in (by
    // creation time).
    let moved: Vec<TaskId> = [63, 10, 20]
        .into_iter()
        .map(|stripe| {
            clock.advance(Duration::from_secs(1));
            let id = common::id_in_stripe("moved", stripe);
            writer.create(NewTask::new().id(id.clone())).unwrap();
            assert!(writer.complete(&id, json!(1)).unwrap().is_applied());
            id
        })
        .collect();
    let file = |area: &str, id: &TaskId| root.join(area).join(format!("{id}.json"));
    for id in &moved {
        std::fs::rename(file("done", id), file("active", id)).unwrap();
    }
    let _holding = common::stopped_holding(test, dir.path(), &lock(root, 63));
    let tries = faults.count_at(FsOp::Lock, lock(root, 63));
    let waits = faults.count_at(FsOp::Create, lock(root, 63));
    let swept = sweeper.sweep().unwrap();
    assert_eq!(
        (waits.calls(), tries.calls()),
        (1, 3),
        "the sweep's waits for stripe 63, and its tries of it: {swept:?}"
    );
    assert_eq!(swept.cleaned, 2, "{swept:?}");
    for id in &moved[1..] {
        assert!(
            !file("active", id).exists() && file("done", id).exists(),
            "{id}: its move finished"
        );
    }
    assert!(file("active", &moved[0]).exists(), "63's left for later");
    let read = sweeper.get(&moved[0]).unwrap().unwrap();
    assert_eq!(read.status, TaskStatus::Completed, "final all along");
}
