//! Handles in forked processes: one used in the child is still held off by its
//! parent, a child forked while a thread is inside a stripe takes it once
//! it is let go, and a child forked beside a batch takes the batches lock
//! for its own.

use super::*;

/// A handle used in a process forked from the one that opened it (after
/// it had locked the task's stripe, so the stripe's lock file was open
/// before the fork) is still excluded by the process it was forked from: an
/// update held under the task's stripe in the parent holds off the child's
/// completion through its copy of the handle, which then completes the
/// updated task. An `flock` belongs to the open file description, which a
/// forked process shares: locking through its copy of the descriptor would
/// share the parent's lock instead of waiting for it, and the completion
/// would land under the update, which would then write the task back as it
/// was, running. The forking runs in a child process of its own (this test
/// binary run again for it alone), where no other test's thread can hold a
/// lock at the fork.
#[cfg(target_os = "linux")]
#[test]
fn a_handle_used_in_a_forked_process_is_still_held_off_by_its_parent() {
    const TEST: &str = "forks::a_handle_used_in_a_forked_process_is_still_held_off_by_its_parent";
    forking_alone(TEST, forker);
}

#[cfg(target_os = "linux")]
fn forker(store: &Path) {
    use taskstore::TaskUpdate;

    let faults = FaultInjector::new();
    let handle = FileStore::builder(store)
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    let task = handle.create(NewTask::new()).unwrap();
    // A write, so that the task's stripe lock file is open before the fork.
    let before = handle.update(&task.id, TaskUpdate::new().metadata("before", true));
    assert!(before.unwrap().is_applied());
    let mut child = common::fork(|| {
        let completed = handle.complete(&task.id, json!("child")).unwrap();
        completed.is_applied()
    });
    let file = store.join("active").join(format!("{}.json", task.id));
    let held = faults.pause_at(FsOp::Rename, &file);
    std::thread::scope(|s| {
        // Owned here, so that a failed assertion lets the held call on as it
        // unwinds, and the scope's threads end.
        let held = held;
        let update =
            s.spawn(|| handle.update(&task.id, TaskUpdate::new().metadata("parent", true)));
        assert!(
            held.wait_reached(|| !update.is_finished()),
            "the update never made the held call"
        );
        child.go();
        // A child that waits is seen waiting; one that does not has
        // completed the task by then.
        common::wait_for_lock_waiter(
            &common::stripe_lock(store, task.id.as_str()),
            "the child to wait for the update, or finish",
            || child.has_ended(),
        );
        held.resume();
        let updated = update.join().unwrap().unwrap();
        assert!(updated.is_applied(), "{updated:?}");
    });
    // Its completion applied.
    child.finish();
    let done = handle.get(&task.id).unwrap().unwrap();
    assert_eq!(done.status, TaskStatus::Completed, "{done:?}");
    assert_eq!(
        done.metadata.get("parent"),
        Some(&json!(true)),
        "the update was lost: {done:?}"
    );
    assert_eq!(done.revision, task.revision + 3, "{done:?}");
}

/// A process forked while a thread of its parent is inside a task's stripe
/// (a write under way) takes that stripe through its copy of the handle
/// once the parent's write lets it go: the thread is not in the child, so
/// the child's copy of the handle must not wait for it to leave. (Every
/// call of the child on the stripe waited for a thread that was not there,
/// and failed after its `stripe_wait`.) The forking runs in a child process
/// of its own, as above.
#[cfg(target_os = "linux")]
#[test]
fn a_process_forked_while_a_thread_is_inside_a_stripe_takes_it_once_let_go() {
    const TEST: &str =
        "forks::a_process_forked_while_a_thread_is_inside_a_stripe_takes_it_once_let_go";
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "forker");
        return forked_inside(Path::new(&args[0]));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::spawn(dir.path(), TEST, "forker", &[store.display().to_string()]).finish();
}

#[cfg(target_os = "linux")]
fn forked_inside(store: &Path) {
    use taskstore::TaskUpdate;

    let faults = FaultInjector::new();
    let handle = FileStore::builder(store)
        .fault_injector(faults.clone())
        .stripe_wait(Duration::from_secs(5))
        .open()
        .unwrap();
    let [a, b] = [common::id_in_stripe("a", 9), common::id_in_stripe("b", 9)];
    for id in [&a, &b] {
        handle.create(NewTask::new().id(id.clone())).unwrap();
    }
    let file = store.join("active").join(format!("{a}.json"));
    let held = faults.pause_at(FsOp::Rename, &file);
    std::thread::scope(|s| {
        let held = held;
        let update = s.spawn(|| handle.update(&a, TaskUpdate::new().metadata("parent", true)));
        assert!(
            held.wait_reached(|| !update.is_finished()),
            "the update never made the held call"
        );
        // Forked with the update inside the stripe.
        let mut child = common::fork(|| {
            let update = handle.update(&b, TaskUpdate::new().metadata("child", true));
            match update {
                Ok(t) => t.is_applied(),
                Err(e) => panic!("the child's write: {e}"),
            }
        });
        child.go();
        held.resume();
        assert!(update.join().unwrap().unwrap().is_applied());
        child.finish();
    });
    let b = handle.get(&b).unwrap().unwrap();
    assert_eq!(b.metadata.get("child"), Some(&json!(true)), "{b:?}");
}

/// A hold on the batches lock taken before a fork holds nothing in the
/// child: a listing in a process forked while its parent's sweep was
/// between the halves of a batch (holding the lock shared) takes the lock
/// for its own batch itself, so that once the parent's sweep ends and lets
/// go, the child's batch, held up on a task's stripe, still holds a check
/// off (a try to take the lock exclusive fails). Counting on its parent's
/// hold, the child held nothing once the parent let go, and a check would
/// have judged its batch's work in progress. The forking runs in a child
/// process of its own (this test binary run again for it alone).
#[cfg(target_os = "linux")]
#[test]
fn a_batch_hold_taken_before_a_fork_holds_nothing_in_the_child() {
    const TEST: &str = "forks::a_batch_hold_taken_before_a_fork_holds_nothing_in_the_child";
    forking_alone(TEST, forked_beside_a_batch);
}

#[cfg(target_os = "linux")]
fn forked_beside_a_batch(store: &Path) {
    let clock = ManualClock::new(datetime!(2030-01-01 0:00 UTC));
    let faults = FaultInjector::new();
    let handle = FileStore::builder(store)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .stripe_wait(Duration::from_secs(120))
        .open()
        .unwrap();
    // One task the parent's sweep deletes now, two the child's listing
    // meets expired later.
    let swept = common::finished_with_ttl(&handle, 1, Duration::from_secs(60));
    let later = common::finished_with_ttl(&handle, 2, Duration::from_secs(3_600));
    clock.advance(Duration::from_secs(120));
    let entry = std::fs::read_dir(store.join("expiring"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(swept[0].as_str()))
        .expect("the swept task's expiring/ entry");
    let held = faults.pause_at(FsOp::Remove, &entry);
    // A task of the child's batch whose stripe is held by hand: its batch
    // waits there, holding the batches lock.
    let stripe = common::open_lock_file(&common::stripe_lock(store, later[0].as_str()));
    stripe.lock().unwrap();
    std::thread::scope(|s| {
        let held = held;
        let sweep = s.spawn(|| handle.sweep().unwrap());
        assert!(
            held.wait_reached(|| !sweep.is_finished()),
            "the sweep never made the held call"
        );
        let mut child = common::fork(|| {
            clock.advance(Duration::from_secs(3_600));
            handle
                .list(&ListQuery::all())
                .is_ok_and(|page| page.tasks.is_empty())
        });
        child.go();
        common::wait_for_lock_waiter(
            &common::stripe_lock(store, later[0].as_str()),
            "the child's batch to wait for the stripe, or finish",
            || child.has_ended(),
        );
        held.resume();
        assert_eq!(sweep.join().unwrap().deleted, 1);
        // The parent let go of its hold; the child's batch still holds.
        let check = common::open_lock_file(&common::batches_lock(store));
        let taken = check.try_lock();
        assert!(
            taken.is_err(),
            "a check took the batches lock beside the child's batch: {taken:?}"
        );
        stripe.unlock().unwrap();
        child.finish();
    });
}

/// Runs `forking` on a store in a fresh directory, in a child process of
/// its own (the test binary run again for test `test` alone), where no
/// other test's thread can hold a lock at a fork; in that child, runs it.
#[cfg(target_os = "linux")]
fn forking_alone(test: &str, forking: fn(&Path)) {
    if let Some((role, args)) = common::role() {
        assert_eq!(role, "forker");
        return forking(Path::new(&args[0]));
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    common::spawn(dir.path(), test, "forker", &[store.display().to_string()]).finish();
}
