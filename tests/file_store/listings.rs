//! Listings of history beside a stripe a stopped process holds: a corrupt
//! file of that stripe is left for a later listing to set aside.

use super::*;

/// A listing of history that meets a corrupt file in `done/` of a task
/// whose stripe a stopped process holds does not wait for the stripe to
/// set it aside: it lists the other tasks and reports the file left in
/// place, naming the lock; the next listing, once the stripe is let go,
/// sets it aside. (It waited for the stripe holding its handle's history,
/// so every other listing of the handle waited with it, as long as its
/// `stripe_wait`.)
#[cfg(target_os = "linux")]
#[test]
fn a_listing_leaves_a_corrupt_file_of_a_held_stripe_for_a_later_listing() {
    let test = "listings::a_listing_leaves_a_corrupt_file_of_a_held_stripe_for_a_later_listing";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let (corrupt, good) = (
        common::id_in_stripe("corrupt", 7),
        common::id_in_stripe("good", 33),
    );
    {
        let writer = FileStore::open(&root).unwrap();
        for id in [&corrupt, &good] {
            writer.create(NewTask::new().id(id.clone())).unwrap();
            assert!(writer.complete(id, json!(1)).unwrap().is_applied());
        }
    }
    let file = root.join("done").join(format!("{corrupt}.json"));
    fs::write(&file, b"{ not a task").unwrap();
    let lock = common::stripe_lock(&root, corrupt.as_str());
    let mut holder = common::stopped_holding(test, tmp.path(), &lock);
    // Waits for the stripe longer than the test waits for the listing.
    let reader = FileStore::builder(&root)
        .stripe_wait(common::HANG * 2)
        .open()
        .unwrap();
    let (waited, page) = std::thread::scope(|s| {
        let listing = s.spawn(|| reader.list(&ListQuery::all()));
        common::wait_for_lock_waiter(
            &lock,
            "the listing to end, or to wait for the stripe",
            || listing.is_finished(),
        );
        let waited = !listing.is_finished();
        // Let go before any assertion: the listing ends either way.
        holder.kill();
        (waited, listing.join().unwrap().unwrap())
    });
    assert!(!waited, "the listing waited for the held stripe");
    let ids: Vec<_> = page.tasks.iter().map(|t| &t.id).collect();
    assert_eq!(ids, [&good]);
    let [skipped] = &page.skipped[..] else {
        panic!("{:?}", page.skipped)
    };
    assert_eq!(skipped.id.as_ref(), Some(&corrupt), "{skipped:?}");
    assert_eq!(
        skipped.action,
        taskstore::UnreadableAction::LeftInPlace,
        "{skipped:?}"
    );
    assert!(
        skipped.reason.contains(&lock.display().to_string()),
        "{skipped:?}"
    );
    assert!(file.exists());
    // The stripe let go: the next listing sets the file aside.
    let page = reader.list(&ListQuery::all()).unwrap();
    let actions: Vec<_> = page
        .skipped
        .iter()
        .map(|s| (s.id.as_ref(), s.action))
        .collect();
    assert_eq!(
        actions,
        [(Some(&corrupt), taskstore::UnreadableAction::SetAside)]
    );
    assert!(!file.exists());
}
