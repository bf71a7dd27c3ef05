//! A sweep's removals of expired running tasks: files it has not read are
//! read once, and the unlinks it makes itself queue no change notices while
//! every other handle's unlink is still seen (a panic midway included).

use std::path::Path;
use std::time::Duration;

use super::{
    Mode, active, active_ids, expired_since, handle, logged_sweeper_and_writer, pair, reads,
};
use crate::TaskId;
use crate::file::FileStore;
use crate::store::TaskStore;
use crate::task::{NewTask, TaskUpdate};

/// A sweep by a handle that meets hundreds of new files removes the expired
/// running tasks among them reading each file once, under its lock, never
/// into the snapshot (`unread`), and reports each with the version it read;
/// what it leaves (running tasks without a TTL, a file that does not
/// decode) goes into the snapshot as any new file does, and is listed and
/// reported. With a few new files, or a snapshot that is not complete, the
/// sweep reads them into the snapshot first, as before.
#[test]
fn a_sweep_removes_expired_files_it_has_not_read_reading_each_once() {
    const EXPIRED: usize = 300;
    const UPDATED: usize = 10;
    const LIVE: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (clock, log, sweeper, writer) = logged_sweeper_and_writer(dir.path(), EXPIRED);
    assert!(active(&sweeper).is_empty(), "the snapshot is complete");
    let ttl = Duration::from_secs(60);
    let mut revisions = std::collections::BTreeMap::new();
    for n in 0..EXPIRED {
        let task = writer.create(NewTask::new().ttl(ttl)).unwrap();
        let task = if n < UPDATED {
            writer
                .update(&task.id, TaskUpdate::new().metadata("n", n))
                .unwrap()
                .into_task()
        } else {
            task
        };
        revisions.insert(task.id, task.revision);
    }
    let live: Vec<TaskId> = (0..LIVE)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    let junk = dir.path().join("active").join("junk.json");
    std::fs::write(&junk, b"{not a task").unwrap();
    clock.advance(ttl * 2);

    let (reads_before, from) = (reads(&sweeper), log.last_seq() + 1);
    let swept = sweeper.sweep().unwrap();
    assert_eq!(swept.deleted, EXPIRED, "{swept:?}");
    assert!(swept.missed.is_empty(), "{swept:?}");
    assert_eq!(
        swept
            .skipped
            .iter()
            .map(|s| s.location.as_str())
            .collect::<Vec<_>>(),
        [junk.display().to_string()],
        "the file that does not decode is reported"
    );
    assert_eq!(
        reads(&sweeper) - reads_before,
        (LIVE + 1) as u64,
        "only the files the sweep left were read into the snapshot"
    );
    let expired: std::collections::BTreeMap<TaskId, u64> =
        expired_since(&log, from).into_iter().collect();
    assert_eq!(
        expired, revisions,
        "each expired task reported once, as it was read"
    );
    let mut live = live;
    live.sort();
    assert_eq!(active_ids(&sweeper), live);
    assert_eq!(active_ids(&handle(dir.path(), Mode::Watch)), live);
    assert_eq!(
        std::fs::read_dir(dir.path().join("active"))
            .unwrap()
            .count(),
        LIVE,
        "the expired files are gone, the junk set aside"
    );
}

/// The names of new files a sweep has taken from the change notices, to
/// read the files itself, are not lost to a listing in the meantime: it
/// reads them as changed names (`State::unread`).
#[test]
fn a_listing_reads_the_new_files_a_sweep_has_taken() {
    const NEW: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (sweeper, writer) = pair(dir.path(), Mode::Watch);
    assert!(active(&sweeper).is_empty(), "the snapshot is complete");
    for _ in 0..NEW {
        writer.create(NewTask::new()).unwrap();
    }
    let taken = sweeper.backend().take_unread().unwrap_or_default();
    assert_eq!(taken.len(), NEW, "the sweep takes every new name");
    assert_eq!(
        active(&sweeper).len(),
        NEW,
        "a listing meanwhile reads them"
    );
    assert!(sweeper.backend().snapshot.lock().unread.is_none());
}

/// A sweeper and a writer, both watching, on a new store in `dir`, and the
/// clock they share.
fn sweeper_and_writer(
    dir: &Path,
) -> (
    std::sync::Arc<crate::clock::ManualClock>,
    FileStore,
    FileStore,
) {
    let (clock, _, sweeper, writer) = logged_sweeper_and_writer(dir, 1);
    (clock, sweeper, writer)
}

/// 300 tasks `writer` makes with a TTL and 5 without, listed by `learner`
/// (if any) while all are live, then the `clock` past the expiry: the
/// expired ids and the live ones (sorted).
fn expired_and_live(
    writer: &FileStore,
    clock: &crate::clock::ManualClock,
    learner: Option<&FileStore>,
) -> (Vec<TaskId>, Vec<TaskId>) {
    let ttl = Duration::from_secs(60);
    let expired: Vec<TaskId> = (0..300)
        .map(|_| writer.create(NewTask::new().ttl(ttl)).unwrap().id)
        .collect();
    let mut live: Vec<TaskId> = (0..5)
        .map(|_| writer.create(NewTask::new()).unwrap().id)
        .collect();
    live.sort();
    if let Some(learner) = learner {
        // A listing deletes what it meets expired: it lists them live.
        assert_eq!(active_ids(learner).len(), expired.len() + live.len());
    }
    clock.advance(ttl * 2);
    (expired, live)
}

/// A sweep's own unlinks of the files it has not read queue no change
/// notices (the sweeper's watch stops noticing unlinks only while the sweep
/// holds every stripe, so no one else can make one), yet the sweeper sees
/// another handle's unlink right after; and a refresh that read the files
/// while the sweep was removing them keeps no entry of a removed file.
#[test]
fn a_sweeps_own_unlinks_queue_no_notices_and_every_other_unlink_is_still_seen() {
    use std::sync::Once;

    use crate::clock::Clock;

    // Each round: a refresh in the middle of the pass, or none.
    for refresh_meanwhile in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (clock, sweeper, writer) = sweeper_and_writer(dir.path());
        assert!(active(&sweeper).is_empty(), "the snapshot is complete");
        let (expired, live) = expired_and_live(&writer, &clock, None);

        let backend = sweeper.backend();
        let now = clock.now();
        let refreshed = Once::new();
        let mut removed = Vec::new();
        backend.remove_unread(
            &|task| {
                if refresh_meanwhile {
                    refreshed.call_once(|| {
                        let mut state = backend.snapshot.lock();
                        backend.refresh(&mut state).unwrap();
                    });
                }
                task.is_expired_at(now)
            },
            &mut |task| removed.push(task.id),
        );
        removed.sort();
        let mut want = expired.clone();
        want.sort();
        assert_eq!(removed, want, "refresh meanwhile: {refresh_meanwhile}");
        let context = format!("the sweep, refresh meanwhile: {refresh_meanwhile}");
        own_unlinks_unnoticed_others_seen(&sweeper, &writer, &expired, &live, &context);
    }
}

/// After `sweeper` removed the `expired` tasks holding every stripe: its
/// watch queued no notice of those unlinks, its snapshot keeps no entry of
/// them and lists the `live` ones, and an unlink by `writer` right after is
/// seen (`context` names the pass in the messages).
fn own_unlinks_unnoticed_others_seen(
    sweeper: &FileStore,
    writer: &FileStore,
    expired: &[TaskId],
    live: &[TaskId],
    context: &str,
) {
    {
        let state = sweeper.backend().snapshot.lock();
        let watch = state.watch.as_ref().expect("the watch lives on");
        assert!(
            watch.is_quiet(),
            "{context}: its own unlinks queued notices"
        );
        let kept = expired.iter().filter(|id| state.get(id).is_some()).count();
        assert_eq!(kept, 0, "{context}: entries of removed files kept");
        assert!(state.complete, "{context}: the snapshot is still complete");
    }
    assert_eq!(active_ids(sweeper), live);
    assert!(writer.delete(&live[0]).unwrap());
    assert_eq!(
        active_ids(sweeper),
        live[1..],
        "{context}: another handle's unlink after it is seen"
    );
}

/// The same for a sweep's batch of tasks its handle knows (listed before
/// the sweep): its own unlinks queue no notices, the removed tasks' entries
/// go, and another handle's unlink right after is seen.
#[test]
fn a_sweep_batchs_own_unlinks_queue_no_notices_and_their_entries_go() {
    use crate::backend::{Backend, Scan, Scope, Swap};
    use crate::clock::Clock;

    let dir = tempfile::tempdir().unwrap();
    let (clock, sweeper, writer) = sweeper_and_writer(dir.path());
    // Listed after the fill: the sweeper knows every task.
    let (expired, live) = expired_and_live(&writer, &clock, Some(&sweeper));

    let backend = sweeper.backend();
    let mut scan = Scan::new(Scope::All, expired.len() + live.len());
    scan.expired_at = Some(clock.now());
    scan.payloads = false;
    let doomed = backend.scan(&scan).unwrap().tasks;
    assert_eq!(doomed.len(), expired.len());
    let results = backend.remove_expired(&doomed);
    assert!(results.iter().all(|r| matches!(r, Ok(Swap::Done))));
    own_unlinks_unnoticed_others_seen(&sweeper, &writer, &expired, &live, "the batch");
}

/// A pass that panics while the sweep's watch skips unlinks leaves it
/// noticing them again: another handle's delete is seen after it. It also
/// leaves the snapshot to a full pass (the guard is shared with removal
/// batches of known tasks, whose entries such a pass would leave behind).
#[test]
fn a_sweep_that_panics_leaves_its_watch_noticing_unlinks() {
    const NEW: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let (sweeper, writer) = pair(dir.path(), Mode::Watch);
    let known = writer.create(NewTask::new()).unwrap().id;
    assert_eq!(active(&sweeper).len(), 1, "the snapshot is complete");
    for _ in 0..NEW {
        writer.create(NewTask::new()).unwrap();
    }
    let backend = sweeper.backend();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        backend.remove_unread(&|_| panic!("a doomed check that fails"), &mut |_| {});
    }));
    assert!(panicked.is_err());
    assert!(
        !backend.snapshot.lock().complete,
        "a pass that panicked leaves the next listing a full pass"
    );
    assert_eq!(active(&sweeper).len(), NEW + 1);
    assert!(writer.delete(&known).unwrap());
    assert_eq!(
        active(&sweeper).len(),
        NEW,
        "the delete after the panic was noticed"
    );
}
