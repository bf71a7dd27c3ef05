//! The snapshot of `active/`, in both its modes: kept current by change
//! notices, and proven current by file status. Every write another handle
//! finished must show in the next listing; what did not change must not be
//! read again.
//!
//! This module holds the handles and the helpers every test here shares
//! (and `history_tests` too); the tests are in [`listing`] (listings and
//! gets from the snapshot), [`versions`] (a sweep or a write against a
//! version another handle changed; `active/` made durable after moves),
//! [`unlinks`] (a sweep's removals and the change notices they queue or
//! not) and [`expiry`] (a sweep of due finished tasks through the
//! `expiring/` index).

mod expiry;
mod listing;
mod unlinks;
mod versions;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::TaskId;
use crate::file::layout::Area;
use crate::file::stamp::{self, Stamp};
use crate::file::{Durability, FileStore};
use crate::query::ListQuery;
use crate::store::TaskStore;

/// How a snapshot proves itself current.
#[derive(Clone, Copy, Debug)]
pub(super) enum Mode {
    Watch,
    Status,
}

/// A handle on the store at `dir` (two of them stand for two processes).
fn handle(dir: &Path, mode: Mode) -> FileStore {
    handle_on(FileStore::builder(dir), mode)
}

/// Two handles on the store at `dir`, a reader and a writer, as two
/// processes would hold them.
pub(super) fn pair(dir: &Path, mode: Mode) -> (FileStore, FileStore) {
    (handle(dir, mode), handle(dir, mode))
}

/// The handle `builder` opens, without fsync, proving its snapshot current
/// as `mode` says.
pub(super) fn handle_on(builder: crate::file::FileStoreBuilder, mode: Mode) -> FileStore {
    let store = builder.durability(Durability::Eventual).open().unwrap();
    store
        .backend()
        .snapshot
        .watch
        .store(matches!(mode, Mode::Watch), Ordering::Relaxed);
    store
}

fn active(store: &FileStore) -> Vec<(TaskId, u64)> {
    let mut tasks: Vec<_> = store
        .list(&ListQuery::active())
        .unwrap()
        .tasks
        .into_iter()
        .map(|t| (t.id, t.revision))
        .collect();
    tasks.sort();
    tasks
}

/// The ids [`active`] lists, in order.
fn active_ids(store: &FileStore) -> Vec<TaskId> {
    active(store).into_iter().map(|(id, _)| id).collect()
}

/// Files read into `store`'s snapshot so far.
fn reads(store: &FileStore) -> u64 {
    store.backend().snapshot.lock().reads
}

/// Waits (polling, bounded) until `active/` has stood still long enough for
/// its status to be trusted.
fn settle(store: &FileStore) {
    settle_area(store, Area::Active);
}

/// The same for `area`.
pub(super) fn settle_area(store: &FileStore, area: Area) {
    let backend = store.backend();
    settle_status(area.name(), || {
        backend.fs.stat_dir(backend.dir(area)).unwrap()
    });
}

/// Waits (polling, bounded) until `status` gives a status that has stood
/// still long enough to be trusted; `what` names it if it never does.
fn settle_status(what: &str, status: impl Fn() -> crate::file::fs::Status) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Stamp::settled(&status(), stamp::clock()).is_none() {
        assert!(std::time::Instant::now() < deadline, "{what} never settled");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (polling, bounded) until the file `name` in `area` has stood
/// still long enough for its status to be trusted: one written in place
/// changes no directory, so `settle_area` does not wait for it.
pub(super) fn settle_file(store: &FileStore, area: Area, name: &str) {
    let backend = store.backend();
    settle_status(&format!("{}/{name}", area.name()), || {
        backend
            .fs
            .stat(backend.dir(area), std::ffi::OsStr::new(name))
            .unwrap()
    });
}

/// A sweeper and a writer, both watching, on a new store in `dir`, the
/// clock they share, and the event log the sweeper sends to (room for the
/// events of a sweep of `tasks` tasks).
fn logged_sweeper_and_writer(
    dir: &Path,
    tasks: usize,
) -> (
    std::sync::Arc<crate::clock::ManualClock>,
    std::sync::Arc<crate::events::EventLog>,
    FileStore,
    FileStore,
) {
    let clock = std::sync::Arc::new(crate::clock::ManualClock::new(
        time::macros::datetime!(2026-01-01 0:00 UTC),
    ));
    let log = std::sync::Arc::new(crate::events::EventLog::with_capacity(4 * tasks));
    let open = |builder: crate::file::FileStoreBuilder| {
        handle_on(builder.clock(clock.clone()), Mode::Watch)
    };
    let sweeper = open(FileStore::builder(dir).sink(log.clone()));
    let writer = open(FileStore::builder(dir));
    (clock, log, sweeper, writer)
}

/// The `task.expired` events `log` holds from sequence number `from` on:
/// each task's id and the revision reported, in order.
fn expired_since(log: &crate::events::EventLog, from: u64) -> Vec<(TaskId, u64)> {
    log.snapshot()
        .into_iter()
        .filter(|r| r.seq >= from && r.event.kind == crate::events::TaskEventKind::Expired)
        .map(|r| {
            (
                TaskId::parse(r.event.data["taskId"].as_str().unwrap()).unwrap(),
                r.event.data["revision"].as_u64().unwrap(),
            )
        })
        .collect()
}
