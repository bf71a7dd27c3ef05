//! Pages of history from a handle's keys of `done/`, in both of its modes:
//! kept current by change notices, and proven current by file status. Every
//! change another handle made must show in the next page; a page of a
//! history the handle knows reads only its own files.

use serde_json::json;

use crate::TaskId;
use crate::file::FileStore;
use crate::file::layout::Area;
use crate::file::snapshot_tests::{Mode, handle_on, pair, settle_area, settle_file};
use crate::query::ListQuery;
use crate::status::TaskStatus;
use crate::store::TaskStore;
use crate::task::{NewTask, Task};

const PAGE: usize = 100;

/// Files of `done/` `store` read for listings of history so far.
fn reads(store: &FileStore) -> u64 {
    store
        .backend()
        .history_keys
        .reads
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Every task `store` lists, page by page, and how many files of `done/`
/// each page read.
fn pages(store: &FileStore) -> (Vec<Task>, Vec<u64>) {
    pages_of(store, ListQuery::all())
}

/// The same for `query`.
fn pages_of(store: &FileStore, query: ListQuery) -> (Vec<Task>, Vec<u64>) {
    let (mut tasks, mut read) = (Vec::new(), Vec::new());
    let first = query.limit(PAGE);
    let mut query = first.clone();
    loop {
        let before = reads(store);
        let page = store.list(&query).unwrap();
        store.backend().history_keys.check();
        assert!(page.skipped.is_empty(), "{:?}", page.skipped);
        read.push(reads(store) - before);
        tasks.extend(page.tasks);
        match page.next_cursor {
            Some(cursor) => query = first.clone().after(&cursor),
            None => return (tasks, read),
        }
    }
}

/// What a handle that never listed before lists: the reference. Its
/// listing of everything at once reads every file; and its pages (which
/// place tasks by their index entries) list the same.
fn fresh_pages(dir: &std::path::Path, query: &ListQuery) -> Vec<Task> {
    let (fresh, paging) = pair(dir, Mode::Status);
    let all = fresh.list(query).unwrap();
    assert!(all.skipped.is_empty(), "{:?}", all.skipped);
    let ids = |tasks: &[Task]| tasks.iter().map(|t| t.id.clone()).collect::<Vec<_>>();
    let paged = pages_of(&paging, query.clone()).0;
    assert_eq!(ids(&paged), ids(&all.tasks), "{query:?}");
    assert_eq!(paged, all.tasks, "{query:?}");
    all.tasks
}

/// `n` finished tasks, made by `writer`.
fn finish(writer: &FileStore, n: usize) -> Vec<TaskId> {
    finish_as(writer, n, NewTask::new)
}

/// `n` finished tasks, made by `writer` from `new()`.
fn finish_as(writer: &FileStore, n: usize, new: impl Fn() -> NewTask) -> Vec<TaskId> {
    (0..n)
        .map(|i| {
            let task = writer.create(new()).unwrap();
            assert!(writer.complete(&task.id, json!(i)).unwrap().is_applied());
            task.id
        })
        .collect()
}

/// Waits until `done/` and every file in it have settled. A finished
/// task's file changes last at the end of its move, when its name in
/// `active/` is unlinked (after the fsync of `done/`), so `done/` can
/// settle a moment before its newest file does: `active/` settles with it.
fn settle_history(store: &FileStore) {
    settle_area(store, Area::Done);
    settle_area(store, Area::Active);
}

/// A TTL none of the tests outlives: finished tasks with it have an
/// `expiring/` entry.
const HOUR: std::time::Duration = std::time::Duration::from_secs(3_600);

fn a_page_of_known_history_reads_only_its_own_files(mode: Mode) {
    const FINISHED: usize = 1_000;
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), mode);
    finish(&writer, FINISHED);
    settle_history(&reader);
    // A page reads its tasks and the one after (to know there is a next
    // page), except the last.
    let page = |at: usize| (PAGE + usize::from(at + 1 < FINISHED / PAGE)) as u64;
    // The first listing learns history: each file read once for its keys.
    let (first, read) = pages(&reader);
    assert_eq!(first.len(), FINISHED);
    assert_eq!(read[0], FINISHED as u64 + page(0), "{mode:?}: {read:?}");
    assert!(
        read.iter()
            .enumerate()
            .skip(1)
            .all(|(at, &r)| r == page(at)),
        "{mode:?}: {read:?}"
    );
    let (again, read) = pages(&reader);
    assert_eq!(again, first);
    assert!(
        read.iter().enumerate().all(|(at, &r)| r == page(at)),
        "{mode:?}: a known history reads each page's files alone: {read:?}"
    );
    assert_eq!(again, fresh_pages(dir.path(), &ListQuery::all()));

    // One more finished task: the next page reads it and its own files
    // (without notices, every other file's settled status proves it).
    finish(&writer, 1);
    settle_history(&reader);
    let before = reads(&reader);
    let page = reader.list(&ListQuery::all().limit(PAGE)).unwrap();
    assert_eq!(page.tasks.len(), PAGE);
    assert_eq!(reads(&reader) - before, 1 + PAGE as u64 + 1, "{mode:?}");
}

#[test]
fn with_change_notices_a_page_of_known_history_reads_only_its_own_files() {
    a_page_of_known_history_reads_only_its_own_files(Mode::Watch);
}

#[test]
fn by_file_status_a_page_of_known_history_reads_only_its_own_files() {
    a_page_of_known_history_reads_only_its_own_files(Mode::Status);
}

/// A handle that never listed history places each finished task with a
/// TTL by its `expiring/` entry: its first page reads the files of the
/// tasks without one, and its own; a listing by status reads the files
/// whose status it does not know yet.
fn a_fresh_handle_reads_the_files_its_index_does_not_place(mode: Mode) {
    const FINISHED: usize = 1_000;
    const UNINDEXED: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let writer = pair(dir.path(), mode).1;
    finish_as(&writer, FINISHED, || NewTask::new().ttl(HOUR));
    finish(&writer, UNINDEXED);
    let failed = finish_as(&writer, 5, || NewTask::new().ttl(HOUR));
    for id in &failed {
        assert!(writer.delete(id).unwrap());
        writer
            .create(NewTask::new().id(id.clone()).ttl(HOUR))
            .unwrap();
        assert!(writer.fail(id, json!("no")).unwrap().is_applied());
    }
    let total = FINISHED + UNINDEXED + failed.len();
    // A page reads its tasks and the one after, except the last.
    let last = total.div_ceil(PAGE) - 1;
    let page = |at: usize| match at < last {
        true => PAGE as u64 + 1,
        false => (total - last * PAGE) as u64,
    };

    let (reader, filtering) = pair(dir.path(), mode);
    settle_history(&reader);
    let (listed, read) = pages(&reader);
    assert_eq!(listed, fresh_pages(dir.path(), &ListQuery::all()));
    assert_eq!(read[0], (UNINDEXED as u64) + page(0), "{mode:?}: {read:?}");
    assert!(
        read.iter()
            .enumerate()
            .skip(1)
            .all(|(at, &r)| r == page(at)),
        "{mode:?}: {read:?}"
    );

    // A fresh handle's first page by status: every file read once for it.
    let query = ListQuery::all().status(TaskStatus::Failed);
    let before = reads(&filtering);
    let page = filtering.list(&query.clone().limit(PAGE)).unwrap();
    let want = fresh_pages(dir.path(), &query);
    assert_eq!(page.tasks, want);
    assert_eq!(want.len(), failed.len());
    assert_eq!(reads(&filtering) - before, (total + failed.len()) as u64);
    // A handle that placed history by the index learns the statuses it
    // lacks, and lists the same.
    let placing = pair(dir.path(), mode).0;
    let first = placing.list(&ListQuery::all().limit(PAGE)).unwrap();
    assert_eq!(first.tasks.len(), PAGE);
    assert_eq!(pages_of(&placing, query).0, want);

    // The index was read once, by the first listing; one more finished
    // task is read alone by the next page (without notices, after a full
    // look at `done/`'s status), not placed by reading the whole index.
    let index_reads = |store: &FileStore| {
        let keys = &store.backend().history_keys;
        keys.index_reads.load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(index_reads(&reader), 1, "{mode:?}");
    finish_as(&writer, 1, || NewTask::new().ttl(HOUR));
    settle_history(&reader);
    let before = reads(&reader);
    let first = reader.list(&ListQuery::all().limit(PAGE)).unwrap();
    assert_eq!(first.tasks.len(), PAGE);
    assert_eq!(reads(&reader) - before, 1 + PAGE as u64 + 1, "{mode:?}");
    assert_eq!(index_reads(&reader), 1, "{mode:?}");
}

#[test]
fn with_change_notices_a_fresh_handle_reads_the_files_its_index_does_not_place() {
    a_fresh_handle_reads_the_files_its_index_does_not_place(Mode::Watch);
}

#[test]
fn by_file_status_a_fresh_handle_reads_the_files_its_index_does_not_place() {
    a_fresh_handle_reads_the_files_its_index_does_not_place(Mode::Status);
}

/// An `expiring/` entry that is no longer its task's file (the file was
/// replaced, here by one that lists earlier) places nothing: the task
/// lists where its file says, on the first page.
#[test]
fn an_index_entry_that_is_not_the_tasks_file_places_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writer = pair(dir.path(), Mode::Status).1;
    let ids = finish_as(&writer, 3 * PAGE, || NewTask::new().ttl(HOUR));
    let moved = &ids[2 * PAGE];
    let name = format!("{moved}.json");
    let file = dir.path().join("done").join(&name);
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    // Made half an hour earlier than it was: not expired, but first.
    let rfc3339 = time::format_description::well_known::Rfc3339;
    let created = value["task"]["createdAt"].as_str().unwrap();
    let earlier = time::OffsetDateTime::parse(created, &rfc3339).unwrap() - HOUR / 2;
    value["task"]["createdAt"] = json!(earlier.format(&rfc3339).unwrap());
    let replacement = dir.path().join("tmp").join(&name);
    std::fs::write(&replacement, format!("{value}\n")).unwrap();
    std::fs::rename(&replacement, &file).unwrap();
    let entries = std::fs::read_dir(dir.path().join("expiring"))
        .unwrap()
        .count();
    assert_eq!(entries, ids.len(), "the old entry stays");

    // A handle that follows `done/` by its notices places by the inode
    // numbers of its listing of `done/`, one without them by each file's
    // status (`fresh_pages`).
    let reader = pair(dir.path(), Mode::Watch).0;
    let listed: Vec<TaskId> = pages(&reader).0.into_iter().map(|t| t.id).collect();
    assert_eq!(&listed[0], moved);
    let want = fresh_pages(dir.path(), &ListQuery::all());
    assert_eq!(listed, want.into_iter().map(|t| t.id).collect::<Vec<_>>());
    assert_eq!(listed.len(), ids.len());
}

/// A task file with two `expiring/` entries (another name linked to it
/// that says it was made later) is placed by neither: it lists where its
/// file says, whichever entry the directory gives first.
#[test]
fn a_file_with_two_index_entries_is_placed_by_neither() {
    let dir = tempfile::tempdir().unwrap();
    let writer = pair(dir.path(), Mode::Status).1;
    let ids = finish_as(&writer, 3 * PAGE, || NewTask::new().ttl(HOUR));
    let expiring = dir.path().join("expiring");
    let entries: Vec<std::path::PathBuf> = std::fs::read_dir(&expiring)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // Ten early tasks each get a second entry half an hour later (not
    // expired, but on the last page).
    for id in &ids[..10] {
        let own = entries
            .iter()
            .find(|path| path.to_str().unwrap().ends_with(id.as_str()))
            .unwrap();
        let name = own.file_name().unwrap().to_str().unwrap();
        let (created, rest) = name.split_once('.').unwrap();
        let later = created.parse::<i128>().unwrap() + (HOUR / 2).as_nanos() as i128;
        std::fs::hard_link(own, expiring.join(format!("{later}.{rest}"))).unwrap();
    }
    let want = fresh_pages(dir.path(), &ListQuery::all());
    assert_eq!(want.len(), ids.len());
    let reader = pair(dir.path(), Mode::Watch).0;
    let listed: Vec<TaskId> = pages(&reader).0.into_iter().map(|t| t.id).collect();
    assert_eq!(listed, want.into_iter().map(|t| t.id).collect::<Vec<_>>());
    assert_eq!(&listed[..10], &ids[..10]);
}

/// A file placed by its index entry that does not read (rewritten in place
/// in a newer format) is reported by the page that reaches it and by every
/// listing after, and the pages go on without it.
fn a_placed_file_that_does_not_read_is_reported_by_every_listing_after(mode: Mode) {
    use crate::backend::UnreadableAction;
    let dir = tempfile::tempdir().unwrap();
    let writer = pair(dir.path(), mode).1;
    let ids = finish_as(&writer, 150, || NewTask::new().ttl(HOUR));
    // The same inode, so its entry still places it.
    let newer = dir.path().join("done").join(format!("{}.json", ids[0]));
    std::fs::write(&newer, b"{\"format\":99,\"task\":{}}").unwrap();
    let reader = pair(dir.path(), mode).0;
    settle_history(&reader);
    // Written in place: `done/` did not change, and a listing while the
    // file is unsettled trusts no file's status (one CI run failed so,
    // "Status: 150").
    settle_file(&reader, Area::Done, &format!("{}.json", ids[0]));
    let stats = || {
        let keys = &reader.backend().history_keys;
        keys.stats.load(std::sync::atomic::Ordering::Relaxed)
    };
    for round in 0..3 {
        let (read, stat) = (reads(&reader), stats());
        let page = reader.list(&ListQuery::all().limit(PAGE)).unwrap();
        // After the first: the page's files and the unreadable one, and
        // the status of that one alone.
        if round > 0 {
            assert_eq!(reads(&reader) - read, PAGE as u64 + 1 + 1, "{mode:?}");
            assert!(stats() - stat <= 1, "{mode:?}: {}", stats() - stat);
        }
        assert_eq!(page.tasks.len(), PAGE, "{mode:?}");
        assert_eq!(page.tasks[0].id, ids[1], "{mode:?}");
        let skipped: Vec<(Option<TaskId>, UnreadableAction)> = page
            .skipped
            .iter()
            .map(|s| (s.id.clone(), s.action))
            .collect();
        assert_eq!(
            skipped,
            vec![(Some(ids[0].clone()), UnreadableAction::LeftInPlace)],
            "{mode:?}: round {round}"
        );
        settle_history(&reader);
    }
}

#[test]
fn with_change_notices_a_placed_file_that_does_not_read_is_reported_by_every_listing_after() {
    a_placed_file_that_does_not_read_is_reported_by_every_listing_after(Mode::Watch);
}

#[test]
fn by_file_status_a_placed_file_that_does_not_read_is_reported_by_every_listing_after() {
    a_placed_file_that_does_not_read_is_reported_by_every_listing_after(Mode::Status);
}

/// Another handle's completions, deletions, sweeps and a finished task
/// deleted and made again under its id (a new place in listing order) are
/// each seen by the reader's very next pages, which list exactly what a
/// handle that never listed before lists. The tasks have no TTL, or (`ttl`)
/// one that gives each finished task an `expiring/` entry. With `collide`,
/// every id the reader knows hashes alike, so that it finds each task by
/// its id in full (`file::places`).
fn every_change_to_history_shows_in_the_next_page(mode: Mode, ttl: bool, collide: bool) {
    let new = || match ttl {
        true => NewTask::new().ttl(HOUR),
        false => NewTask::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), mode);
    if collide {
        reader.backend().history_keys.collide_all();
    }
    let ids = finish_as(&writer, 250, new);
    let running = writer.create(new()).unwrap();
    // What a status picks out of history, and the whole of it. Without a
    // TTL the first is by status: a listing of all of history reads each
    // task it returns, and would correct a stale place. With one the first
    // is of all: it places by the index what it does not know, and the
    // listing by status learns their status.
    let mut queries = [
        ListQuery::all().status(TaskStatus::Failed),
        ListQuery::all(),
    ];
    if ttl {
        queries.reverse();
    }
    let check = |what: &str| {
        for query in queries.clone() {
            let (listed, _) = pages_of(&reader, query.clone());
            let want = fresh_pages(dir.path(), &query);
            assert_eq!(listed, want, "{mode:?}, ttl {ttl}: after {what}: {query:?}");
        }
        if collide {
            reader.backend().history_keys.check_collided();
        }
    };
    check("the first completions");
    settle_history(&reader);
    check("nothing");

    finish_as(&writer, 3, new);
    check("three more completions");
    assert!(writer.delete(&ids[0]).unwrap());
    assert!(writer.delete(&ids[120]).unwrap());
    check("two deletions");
    // Made again: the same name in done/ (perhaps its inode number too),
    // a later creation time and another status; the reader knew the old
    // file as settled.
    settle_history(&reader);
    check("the store standing still");
    assert!(writer.delete(&ids[5]).unwrap());
    let again = writer.create(new().id(ids[5].clone())).unwrap();
    assert!(writer.fail(&again.id, json!("again")).unwrap().is_applied());
    // Seen as settled too: only its status tells the new file from the old.
    settle_history(&reader);
    check("a task deleted and made again under its id");
    assert!(
        writer
            .complete(&running.id, json!("late"))
            .unwrap()
            .is_applied()
    );
    // A sweep, by a handle whose clock is past the task's expiry.
    let clock = crate::ManualClock::new(time::OffsetDateTime::now_utc());
    let sweeper = handle_on(
        FileStore::builder(dir.path()).clock(std::sync::Arc::new(clock.clone())),
        mode,
    );
    let ttl = std::time::Duration::from_secs(60);
    let expiring = sweeper.create(NewTask::new().ttl(ttl)).unwrap();
    assert!(
        sweeper
            .complete(&expiring.id, json!(1))
            .unwrap()
            .is_applied()
    );
    check("a finished task with a TTL");
    clock.advance(ttl * 2);
    assert_eq!(sweeper.sweep_expired().unwrap(), 1);
    check("a completion and a sweep");
    let (listed, _) = pages(&reader);
    assert_eq!(listed.len(), 250 + 3 - 2 + 1);
}

#[test]
fn with_change_notices_every_change_to_history_shows_in_the_next_page() {
    every_change_to_history_shows_in_the_next_page(Mode::Watch, false, false);
}

#[test]
fn by_file_status_every_change_to_history_shows_in_the_next_page() {
    every_change_to_history_shows_in_the_next_page(Mode::Status, false, false);
}

#[test]
fn with_change_notices_every_change_to_history_of_tasks_with_a_ttl_shows_in_the_next_page() {
    every_change_to_history_shows_in_the_next_page(Mode::Watch, true, false);
}

#[test]
fn by_file_status_every_change_to_history_of_tasks_with_a_ttl_shows_in_the_next_page() {
    every_change_to_history_shows_in_the_next_page(Mode::Status, true, false);
}

#[test]
fn with_every_id_hashing_alike_every_change_to_history_shows_in_the_next_page() {
    every_change_to_history_shows_in_the_next_page(Mode::Watch, true, true);
    every_change_to_history_shows_in_the_next_page(Mode::Status, false, true);
}

/// A file of `done/` left unreadable (a newer format) is reported by every
/// page, however well the handle knows the rest, and costs each page that
/// file alone (not a look at every file); a corrupt one is set aside by the
/// first page that meets it, and the pages go on without it.
fn a_file_left_unreadable_is_reported_by_every_page(mode: Mode) {
    use crate::backend::UnreadableAction;
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), mode);
    finish(&writer, 150);
    assert_eq!(pages(&reader).0.len(), 150);
    settle_history(&reader);
    let done = dir.path().join("done");
    std::fs::write(done.join("newer.json"), b"{\"format\":99,\"task\":{}}").unwrap();
    std::fs::write(done.join("broken.json"), b"{\"format\":1,\"task\":").unwrap();
    let reported = |expect_broken: bool| {
        let page = reader.list(&ListQuery::all().limit(PAGE)).unwrap();
        assert_eq!(page.tasks.len(), PAGE, "{mode:?}");
        let mut skipped: Vec<(String, UnreadableAction)> = page
            .skipped
            .iter()
            .map(|s| (s.id.as_ref().unwrap().to_string(), s.action))
            .collect();
        skipped.sort_by(|a, b| a.0.cmp(&b.0));
        let mut want = vec![("newer".to_owned(), UnreadableAction::LeftInPlace)];
        if expect_broken {
            want.insert(0, ("broken".to_owned(), UnreadableAction::SetAside));
        }
        assert_eq!(skipped, want, "{mode:?}");
    };
    reported(true);
    let stats = || {
        let keys = &reader.backend().history_keys;
        keys.stats.load(std::sync::atomic::Ordering::Relaxed)
    };
    for round in 0..3 {
        settle_history(&reader);
        let (read, stat) = (reads(&reader), stats());
        reported(false);
        // The first round may look at every file once more: the set-aside
        // changed `done/`. Then a page is its files and the unreadable one.
        if round > 0 {
            assert_eq!(reads(&reader) - read, PAGE as u64 + 1 + 1, "{mode:?}");
            assert!(stats() - stat <= 1, "{mode:?}: {}", stats() - stat);
        }
    }
    assert!(!done.join("broken.json").exists());
    // Gone (upgraded and finished with, say): reported no more.
    std::fs::remove_file(done.join("newer.json")).unwrap();
    settle_history(&reader);
    let page = reader.list(&ListQuery::all().limit(PAGE)).unwrap();
    assert_eq!(page.tasks.len(), PAGE);
    assert!(page.skipped.is_empty(), "{mode:?}: {:?}", page.skipped);
}

#[test]
fn with_change_notices_a_file_left_unreadable_is_reported_by_every_page() {
    a_file_left_unreadable_is_reported_by_every_page(Mode::Watch);
}

#[test]
fn by_file_status_a_file_left_unreadable_is_reported_by_every_page() {
    a_file_left_unreadable_is_reported_by_every_page(Mode::Status);
}

/// A handle without change notices revises the keys it holds of `done/` in
/// place at each pass over it, reading only the files it does not know or
/// whose status changed: a file removed, one added, one replaced (the same
/// id and place, another status) and one set aside (corrupt) since its last
/// listing are each listed, whole and by status, as a handle that never
/// listed before lists them, and known by the keys such a handle knows.
#[test]
fn by_file_status_a_pass_revises_the_keys_it_holds_in_place() {
    use crate::backend::UnreadableAction;
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = pair(dir.path(), Mode::Status);
    let ids = finish(&writer, 250);
    settle_history(&reader);
    assert_eq!(pages(&reader).0.len(), 250);
    let cancelled = ListQuery::all().status(TaskStatus::Cancelled);
    // After `what`, the pass of the next listing reads `read` files, and
    // its first page reports `skipped`.
    let check = |what: &str, read: u64, skipped: Vec<(Option<TaskId>, UnreadableAction)>| {
        settle_history(&reader);
        let before = reads(&reader);
        let page = reader.list(&ListQuery::all().limit(PAGE)).unwrap();
        // The page reads its own files and the next one's.
        assert_eq!(
            reads(&reader) - before,
            read + PAGE as u64 + 1,
            "after {what}: files read"
        );
        let reported: Vec<(Option<TaskId>, UnreadableAction)> = page
            .skipped
            .iter()
            .map(|s| (s.id.clone(), s.action))
            .collect();
        assert_eq!(reported, skipped, "after {what}");
        for query in [ListQuery::all(), cancelled.clone()] {
            let (listed, _) = pages_of(&reader, query.clone());
            assert_eq!(listed, fresh_pages(dir.path(), &query), "after {what}");
        }
        let fresh = pair(dir.path(), Mode::Status).0;
        pages(&fresh);
        let keys = &reader.backend().history_keys;
        keys.check_knows_as(&fresh.backend().history_keys, what);
    };
    let file = |id: &TaskId| dir.path().join("done").join(format!("{id}.json"));
    // Written beside it and renamed over it: another file, its status too.
    let replace = |id: &TaskId, bytes: String| {
        let tmp = dir.path().join("tmp").join(format!("{id}.json"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, file(id)).unwrap();
    };

    assert!(writer.delete(&ids[10]).unwrap());
    check("a removal", 0, Vec::new());
    let added = finish(&writer, 1);
    check("an addition", 1, Vec::new());
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(file(&ids[20])).unwrap()).unwrap();
    value["task"]["status"] = json!("cancelled");
    value["task"].as_object_mut().unwrap().remove("result");
    replace(&ids[20], format!("{value}\n"));
    check("a replacement", 1, Vec::new());
    replace(&ids[30], "{\"format\":1,\"task\":".to_owned());
    let set_aside = vec![(Some(ids[30].clone()), UnreadableAction::SetAside)];
    check("a corrupt file", 1, set_aside);
    assert!(!file(&ids[30]).exists());

    let (listed, _) = pages(&reader);
    assert_eq!(listed.len(), 250 - 2 + 1);
    assert_eq!(listed.last().unwrap().id, added[0]);
    let (listed, _) = pages_of(&reader, cancelled);
    let listed: Vec<TaskId> = listed.into_iter().map(|t| t.id).collect();
    assert_eq!(listed, vec![ids[20].clone()]);
}
