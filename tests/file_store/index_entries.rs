//! Index entries a listing gives back: a listing waiting to give one back holds
//! up no other, and every entry it can is given back, the rest once let go.

use super::*;

/// Finished tasks with a TTL, made through a handle gone since, whose
/// `expiring/` entries a power loss took (under `Eventual`): those of
/// `lost`, beside `kept`, which keep theirs.
fn finished_without_entries(root: &Path, lost: &[&taskstore::TaskId], kept: &[&taskstore::TaskId]) {
    let writer = FileStore::open(root).unwrap();
    for &id in lost.iter().chain(kept) {
        let ttl = Duration::from_secs(3_600);
        writer
            .create(NewTask::new().id(id.clone()).ttl(ttl))
            .unwrap();
        assert!(writer.complete(id, json!(0)).unwrap().is_applied());
    }
    for id in lost {
        assert!(has_entry(root, id));
        for entry in fs::read_dir(root.join("expiring")).unwrap() {
            let entry = entry.unwrap();
            if entry
                .file_name()
                .to_string_lossy()
                .ends_with(&format!(".{id}"))
            {
                fs::remove_file(entry.path()).unwrap();
            }
        }
    }
}

/// Whether task `id` has an entry in `expiring/`.
fn has_entry(root: &Path, id: &taskstore::TaskId) -> bool {
    fs::read_dir(root.join("expiring")).unwrap().any(|entry| {
        entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(&format!(".{id}"))
    })
}

/// A listing of history that gives a finished task its lost `expiring/`
/// entry back waits for the task's stripe (a process stopped while it
/// holds it) without holding what its handle knows of history: another
/// thread's listing through the same handle lists meanwhile. Once the
/// stripe is let go, the first listing gives the entry back. (It waited
/// holding the handle's history, and every other listing of the handle
/// waited with it, as long as its `stripe_wait`.)
#[cfg(target_os = "linux")]
#[test]
fn a_listing_waiting_to_give_an_index_entry_back_holds_up_no_other_listing() {
    let test =
        "index_entries::a_listing_waiting_to_give_an_index_entry_back_holds_up_no_other_listing";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let (held, free) = (
        common::id_in_stripe("held", 7),
        common::id_in_stripe("free", 33),
    );
    finished_without_entries(&root, &[&held], &[&free]);
    let lock = common::stripe_lock(&root, held.as_str());
    let mut holder = common::stopped_holding(test, tmp.path(), &lock);
    // Waits for the stripe longer than the test waits for the other listing.
    let reader = FileStore::builder(&root)
        .stripe_wait(common::HANG * 2)
        .open()
        .unwrap();
    std::thread::scope(|s| {
        let first = s.spawn(|| reader.list(&ListQuery::all()));
        common::wait_for_lock_waiter(&lock, "the listing to wait for the held stripe", || {
            first.is_finished()
        });
        let (sent, second) = std::sync::mpsc::channel();
        let reader = &reader;
        s.spawn(move || {
            let _ = sent.send(common::ids_of(reader, &ListQuery::all()));
        });
        let second = second.recv_timeout(common::HANG);
        let still_waiting = !first.is_finished();
        // Let go before any assertion: the first listing ends either way.
        holder.kill();
        let first = first.join().unwrap().unwrap();
        let mut second = second.expect("the second listing waited for the first one's wait");
        assert!(still_waiting, "the first listing gave up its wait");
        second.sort();
        let mut want = vec![held.clone(), free.clone()];
        want.sort();
        assert_eq!(second, want);
        assert_eq!(first.tasks.len(), 2, "{first:?}");
    });
    assert!(has_entry(&root, &held), "the entry is given back");
}

/// A listing of history gives back every lost `expiring/` entry whose
/// task's stripe it can take, past one a stopped process holds (its
/// `stripe_wait` runs out), and that one at the next listing once the
/// stripe is let go. (It stopped at the first task it could not lock, and
/// the tasks after it, the held one too, kept no entry for as long as the
/// handle lived: no sweep would ever delete them.)
#[cfg(target_os = "linux")]
#[test]
fn a_listing_gives_back_every_index_entry_it_can_and_the_rest_once_let_go() {
    let test =
        "index_entries::a_listing_gives_back_every_index_entry_it_can_and_the_rest_once_let_go";
    common::hold_locks_if_the_holder();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let held = common::id_in_stripe("held", 7);
    let free: Vec<_> = (20..28).map(|s| common::id_in_stripe("free", s)).collect();
    let lost: Vec<_> = std::iter::once(&held).chain(&free).collect();
    finished_without_entries(&root, &lost, &[]);
    let lock = common::stripe_lock(&root, held.as_str());
    let mut holder = common::stopped_holding(test, tmp.path(), &lock);
    let reader = FileStore::builder(&root)
        .stripe_wait(Duration::from_millis(300))
        .open()
        .unwrap();
    assert_eq!(reader.list(&ListQuery::all()).unwrap().tasks.len(), 9);
    let without: Vec<_> = free.iter().filter(|id| !has_entry(&root, id)).collect();
    assert!(
        without.is_empty(),
        "left without their entries: {without:?}"
    );
    assert!(!has_entry(&root, &held));
    holder.kill();
    assert_eq!(reader.list(&ListQuery::all()).unwrap().tasks.len(), 9);
    assert!(
        has_entry(&root, &held),
        "the held stripe's entry, once let go"
    );
}
