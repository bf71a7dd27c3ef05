//! Sweeps under failing I/O: removals made durable once after the last,
//! `active` made durable first only when something moved, a failed closing
//! fsync said and made good by the next sweep, chunks and failing files.

use super::*;

/// A handle on the store in `dir` that writes without fsyncs at `clock`'s
/// time: a test's filler.
fn filler(dir: &Path, clock: &ManualClock) -> FileStore {
    FileStore::builder(dir)
        .clock(Arc::new(clock.clone()))
        .durability(Durability::Eventual)
        .open()
        .unwrap()
}

/// A sweep makes its removals durable once, after the last of them: one
/// fsync of `active/` and one of `done/` for a pass of three batches, not
/// one per batch (a reader sees none of the expired tasks before the fsync
/// either way), and the sweep returns only after them; the `expiring/`
/// entries of the finished tasks go after the fsync of `done/`. The same
/// for a sweeper that listed the store before it was filled, which reads
/// the new files itself (`src/file/unread.rs`; running tasks alone, so that
/// no fsync before a removal from `done/` makes its removals durable).
#[test]
fn a_sweep_makes_its_removals_durable_once_after_the_last() {
    use taskstore::FsEvent;
    const RUNNING: usize = 2_500;
    for (listed_first, finished) in [(false, 5), (true, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let ttl = Duration::from_secs(60);
        let recorder = taskstore::Recorder::new();
        let open = || recorded(dir.path(), &clock, &recorder);
        let early = listed_first.then(|| {
            let store = open();
            assert!(store.list(&ListQuery::active()).unwrap().tasks.is_empty());
            store
        });
        {
            let filler = filler(dir.path(), &clock);
            // The finished tasks first, so that they list in the first
            // batch: its removals from `done/` then follow an fsync of
            // `active/` made before any removal (see `settle_moves`), not
            // one between batches.
            common::finished_with_ttl(&filler, finished, ttl);
            clock.advance(Duration::from_millis(1));
            for _ in 0..RUNNING {
                filler.create(NewTask::new().ttl(ttl)).unwrap();
            }
        }
        let store = early.unwrap_or_else(open);
        clock.advance(ttl * 2);
        let from = recorder.len();
        assert_eq!(store.sweep_expired().unwrap(), RUNNING + finished);
        let events = recorder.events();
        let at = |is: &dyn Fn(&FsEvent) -> bool| -> Vec<usize> {
            (from..events.len()).filter(|&i| is(&events[i])).collect()
        };
        let removed = |area: &'static str| {
            at(&move |e| matches!(e, FsEvent::Remove { path } if in_area(path, area)))
        };
        let synced = |area: &'static str| {
            at(&move |e| matches!(e, FsEvent::SyncDir { path } if path.ends_with(area)))
        };
        for (area, count) in [("active", RUNNING), ("done", finished)] {
            let removals = removed(area);
            assert_eq!(
                removals.len(),
                count,
                "listed first {listed_first}, {area}: every expired task's file is removed"
            );
            let Some((&first, &last)) = removals.first().zip(removals.last()) else {
                continue;
            };
            let after_first: Vec<usize> = synced(area).into_iter().filter(|&i| i > first).collect();
            assert_eq!(
                after_first.len(),
                1,
                "listed first {listed_first}, {area}: one fsync once the removals began, for the whole pass (calls {after_first:?})"
            );
            assert!(
                after_first[0] > last,
                "listed first {listed_first}, {area}: the fsync (call {}) comes after the last removal (call {last})",
                after_first[0]
            );
        }
        let unindexed = removed("expiring");
        assert_eq!(unindexed.len(), finished);
        if let Some(done_durable) = synced("done").into_iter().max() {
            assert!(
                unindexed.iter().all(|&i| i > done_durable),
                "the finished tasks' entries go after their removal is durable (call {done_durable}): {unindexed:?}"
            );
        }
        assert_eq!(fs::read_dir(dir.path().join("active")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("done")).unwrap().count(), 0);
        assert_eq!(
            fs::read_dir(dir.path().join("expiring")).unwrap().count(),
            0
        );
    }
}

/// A sweep's batch of finished tasks makes `active/` durable before its
/// removals from `done/` (a terminal move's last unlink there is not made
/// durable by the move), but not again while nothing has changed in
/// `active/` since (the sweeping handle's watch would have noticed the
/// unlink that ends any move): the first sweep fsyncs `active/` once, a
/// second with no move since not at all, a third after more tasks finished
/// once again.
#[test]
fn a_sweep_makes_active_durable_before_removing_finished_tasks_only_when_something_moved() {
    const EACH: usize = 300; // a batch that takes every stripe
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let recorder = taskstore::Recorder::new();
    let sweeper = recorded(dir.path(), &clock, &recorder);
    assert!(sweeper.list(&ListQuery::active()).unwrap().tasks.is_empty());
    let filler = filler(dir.path(), &clock);
    // Two sets, the second expiring a minute after the first.
    common::finished_with_ttl(&filler, EACH, Duration::from_secs(60));
    common::finished_with_ttl(&filler, EACH, Duration::from_secs(120));
    let sweep = |after: Duration| {
        clock.advance(after);
        let from = recorder.len();
        assert_eq!(sweeper.sweep_expired().unwrap(), EACH);
        let events = recorder.events();
        let first_removal = first(&events, from, removed_from("done"));
        events[from..first_removal]
            .iter()
            .filter(|e| synced("active")(e))
            .count()
    };
    assert_eq!(sweep(Duration::from_secs(61)), 1, "the first sweep");
    assert_eq!(
        sweep(Duration::from_secs(60)),
        0,
        "a sweep with no move in active/ since the last"
    );
    common::finished_with_ttl(&filler, EACH, Duration::from_secs(1));
    assert_eq!(
        sweep(Duration::from_secs(2)),
        1,
        "a sweep after tasks finished since"
    );
}

/// A sweep whose closing fsync of `active/` fails returns that error, naming
/// the directory, and loses nothing: its removals stay pending on the handle,
/// and the next sweep makes them durable (an fsync of `active/` even with
/// nothing left to remove).
#[test]
fn a_sweep_whose_closing_fsync_fails_says_so_and_the_next_makes_it_durable() {
    use taskstore::FsOp;
    let dir = tempdir();
    let root = dir.path().join("store");
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let recorder = taskstore::Recorder::new();
    let store = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .recorder(recorder.clone())
        .open()
        .unwrap();
    let ttl = Duration::from_secs(60);
    for _ in 0..3 {
        store.create(NewTask::new().ttl(ttl)).unwrap();
    }
    clock.advance(ttl * 2);
    let active = root.join("active");
    faults.fail_at(FsOp::SyncDir, &active, Fault::Eio);
    let error = store.sweep_expired().unwrap_err();
    let said = error.to_string();
    assert!(
        said.contains("fsync") && said.contains(&active.display().to_string()),
        "the error names the call and the directory: {said}"
    );
    assert_eq!(fs::read_dir(&active).unwrap().count(), 0);
    faults.disarm();
    let from = recorder.len();
    assert_eq!(store.sweep_expired().unwrap(), 0);
    let events = recorder.events();
    assert!(
        events[from..].iter().any(synced("active")),
        "the next sweep makes the pending removals durable: {:?}",
        &events[from..]
    );
}

/// A sweep of hundreds of finished tasks (read and removed as it meets
/// them, under every stripe) past files that fail: one whose unlink fails
/// every time, one that cannot be read, one whose `active/` name cannot be
/// looked at. Nothing is lost and nothing reported twice: the sweep reports
/// the first as missed (its error naming the operation and the file) and
/// the second as skipped, removes every other task once, and once the
/// device is well again the next sweep removes the two.
#[test]
fn a_sweep_of_many_finished_tasks_past_failing_files_reports_each_once_and_loses_nothing() {
    use taskstore::FsOp;

    const FINISHED: usize = 300; // read and removed as the sweep meets them
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let faults = FaultInjector::new();
    let log = Arc::new(EventLog::with_capacity(4 * FINISHED));
    let sweeper = FileStore::builder(dir.path())
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .sink(log.clone())
        .open()
        .unwrap();
    let writer = filler(dir.path(), &clock);
    let ttl = Duration::from_secs(60);
    let ids = common::finished_with_ttl(&writer, FINISHED, ttl);
    let file = |area: &str, id: &TaskId| dir.path().join(area).join(format!("{id}.json"));
    let (unlinks, reads, looks) = (&ids[10], &ids[20], &ids[30]);
    faults.fail_at(FsOp::Remove, file("done", unlinks), Fault::Eio);
    faults.fail_at(FsOp::Open, file("done", reads), Fault::Eio);
    faults.fail_at(FsOp::Stat, file("active", looks), Fault::Eio);
    clock.advance(ttl * 2);

    let reported = |from: u64| -> Vec<TaskId> {
        let mut ids: Vec<TaskId> = log
            .snapshot()
            .into_iter()
            .filter(|r| r.seq >= from && r.event.kind == TaskEventKind::Expired)
            .map(|r| tid(r.event.data["taskId"].as_str().unwrap()))
            .collect();
        ids.sort();
        ids
    };
    let from = log.last_seq() + 1;
    let swept = sweeper.sweep().unwrap();
    let first = reported(from);
    assert_eq!(swept.deleted, FINISHED - 2, "{swept:?}");
    assert_eq!(
        first.len(),
        FINISHED - 2,
        "each task removed is reported once"
    );
    assert_eq!(
        swept.missed.iter().map(|m| &m.id).collect::<Vec<_>>(),
        [unlinks],
        "{swept:?}"
    );
    let message = swept.missed[0].error.to_string();
    assert!(
        message.contains("remove")
            && message.contains(&file("done", unlinks).display().to_string()),
        "the error names the operation and the file: {message}"
    );
    assert_eq!(
        swept
            .skipped
            .iter()
            .map(|s| s.id.as_ref())
            .collect::<Vec<_>>(),
        [Some(reads)],
        "{swept:?}"
    );

    faults.disarm();
    let from = log.last_seq() + 1;
    let again = sweeper.sweep().unwrap();
    let mut second = reported(from);
    assert_eq!(again.deleted, 2, "{again:?}");
    let mut left = vec![unlinks.clone(), reads.clone()];
    left.sort();
    assert_eq!(second, left);
    second.extend(first);
    second.sort();
    let mut all = ids.clone();
    all.sort();
    assert_eq!(second, all, "every task reported once over the two sweeps");
    for area in ["active", "done", "expiring"] {
        assert_eq!(
            fs::read_dir(dir.path().join(area)).unwrap().count(),
            0,
            "{area}/ is empty"
        );
    }
}

/// A sweep of finished tasks in several chunks of 1,024, by a handle that
/// had not listed the store (no complete snapshot, so no watch's mark to
/// prove nothing moved), makes `active/` durable once: it brings the
/// snapshot up to date first, and the chunks after the first see nothing
/// moved since.
#[test]
fn a_sweep_of_finished_tasks_in_several_chunks_makes_active_durable_once() {
    const FINISHED: usize = 2_100; // three chunks
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let ttl = Duration::from_secs(60);
    common::finished_with_ttl(&filler(dir.path(), &clock), FINISHED, ttl);
    let recorder = taskstore::Recorder::new();
    let sweeper = recorded(dir.path(), &clock, &recorder);
    clock.advance(ttl * 2);
    let from = recorder.len();
    assert_eq!(sweeper.sweep_expired().unwrap(), FINISHED);
    let events = &recorder.events()[from..];
    let count = |is: &dyn Fn(&taskstore::FsEvent) -> bool| events.iter().filter(|e| is(e)).count();
    assert_eq!(
        count(&synced("active")),
        1,
        "one fsync of active/ for the whole sweep"
    );
    assert_eq!(count(&removed_from("done")), FINISHED);
}

/// A sweep whose clean-up fails after the store's open removed crashed
/// writers' temp files still counts them: it returns `cleaned` 2 beside the
/// failure in `Swept::errors` (the failure names the call and `tmp/`), and
/// the next sweep counts nothing twice. (The clean-up took the open's count
/// and lost it with the failure: the sweep failed as one that did nothing,
/// and no sweep ever counted the two files.)
#[test]
fn a_sweep_whose_clean_up_fails_still_counts_what_the_open_cleaned() {
    let dir = tempdir();
    let root = dir.path().join("store");
    let clock = ManualClock::new(T0);
    let ids: Vec<TaskId> = {
        let filler = filler(&root, &clock);
        (0..2)
            .map(|_| filler.create(NewTask::new()).unwrap().id)
            .collect()
    };
    let tmp = root.join("tmp");
    for (i, id) in ids.iter().enumerate() {
        // A writer that died mid-write (no process has its pid).
        fs::write(tmp.join(format!("{id}.999999.{i}.tmp")), b"{\"format\":1,").unwrap();
    }
    let faults = FaultInjector::new();
    let store = FileStore::builder(&root)
        .clock(Arc::new(clock.clone()))
        .fault_injector(faults.clone())
        .open()
        .unwrap();
    assert_eq!(
        fs::read_dir(&tmp).unwrap().count(),
        0,
        "the open removed them"
    );
    faults.fail_at(FsOp::ReadDir, &tmp, Fault::Eio);
    let swept = store
        .sweep()
        .expect("the open's two count: the sweep did something");
    assert_eq!((swept.deleted, swept.cleaned), (0, 2), "{swept:?}");
    let [error] = swept.errors.as_slice() else {
        panic!("one failure of the pass: {swept:?}");
    };
    let said = error.to_string();
    assert!(
        said.contains(&tmp.display().to_string()),
        "the error names tmp/: {said}"
    );
    faults.disarm();
    let swept = store.sweep().unwrap();
    assert_eq!((swept.cleaned, swept.errors.len()), (0, 0), "{swept:?}");
}
