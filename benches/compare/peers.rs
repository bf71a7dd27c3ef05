//! The peers a user would pick instead of `taskstore`, written as a careful
//! user would write them, behind one small trait so every workload runs the
//! same calls on each. Each peer passes `check` before it is timed.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use taskstore::{
    Durability, FileStore, ListQuery, NewTask, Task, TaskId, TaskStatus, TaskStore, TaskUpdate,
};
use time::OffsetDateTime;

mod on_redb;
mod on_sqlite;

pub use on_redb::Redb;
pub use on_sqlite::Sqlite;

/// The operations every peer implements, with `taskstore`'s semantics:
/// first writer wins on terminal transitions, updates merge one metadata key
/// and bump the revision, TTL from creation, list active in creation order
/// (`created_at`, then id).
pub trait Peer: Send + Sync {
    fn name(&self) -> &'static str;
    fn create(&self, ttl: Option<Duration>) -> TaskId;
    fn get(&self, id: &TaskId) -> Option<Task>;
    fn update(&self, id: &TaskId, key: &str, value: u64) -> Task;
    /// `true` if this call's completion applied (first writer wins).
    fn complete(&self, id: &TaskId, result: Value) -> bool;
    /// `true` if a live task was deleted.
    fn delete(&self, id: &TaskId) -> bool;
    fn list_active(&self) -> Vec<Task>;
    /// One page of at most `limit` active tasks in listing order, after the
    /// cursor of the previous page: a keyset on (`created_at`, id).
    fn page(&self, limit: usize, after: Option<&str>) -> Page;
    fn sweep_expired(&self) -> usize;
    /// Renews the lease of each of `ids` (running tasks this handle made):
    /// a new lease 30 s from now and a revision more, written as one batch
    /// made durable once, each peer's fastest honest way. Returns how many
    /// it renewed.
    fn renew_all(&self, ids: &[TaskId]) -> usize;
    /// Fixture, untimed: `n` more active tasks (without a TTL), or with
    /// `ttl`, each peer's fastest honest way.
    fn fill(&self, n: usize, ttl: Option<Duration>);
    /// Fixture, untimed: `n` more finished (completed) tasks with `ttl`,
    /// made `ttl` and a second ago: expired when it returns.
    fn fill_finished(&self, n: usize, ttl: Duration);
    /// Fixture, untimed: this handle learns the tasks a fill made, as a
    /// server's long-lived handle knows them from listing while they ran,
    /// without meeting them expired (a listing deletes what it meets
    /// expired). One page, unless a peer needs more.
    fn learn_tasks(&self) {
        self.page(1, None);
    }
}

/// A page of active tasks and the cursor of the next one.
pub struct Page {
    pub tasks: Vec<Task>,
    pub next: Option<String>,
}

/// The keyset cursor of the SQLite and redb peers: `<created_at nanos>.<id>`.
fn keyset(task: &Task) -> String {
    format!("{}.{}", task.created_at.unix_timestamp_nanos(), task.id)
}

fn parse_keyset(cursor: &str) -> (i128, &str) {
    let (nanos, id) = cursor.split_once('.').unwrap();
    (nanos.parse().unwrap(), id)
}

/// The first `limit` of `rows` (read with one more, to know whether a next
/// page exists), and that next page's cursor.
fn paged(mut tasks: Vec<Task>, limit: usize) -> Page {
    let next = (tasks.len() > limit).then(|| {
        tasks.truncate(limit);
        keyset(tasks.last().unwrap())
    });
    Page { tasks, next }
}

/// A new task as every peer encodes it: `taskstore`'s own JSON.
fn new_task(ttl: Option<Duration>) -> Task {
    let now = OffsetDateTime::now_utc();
    let rfc = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    serde_json::from_value(json!({
        "taskId": TaskId::new(),
        "status": "working",
        "createdAt": rfc,
        "lastUpdatedAt": rfc,
        "ttlMs": ttl.map(|t| t.as_millis() as u64),
        "revision": 1,
    }))
    .unwrap()
}

/// A finished task as every peer encodes it, made `age` ago.
fn finished_task(ttl: Option<Duration>, age: Duration) -> Task {
    let mut task = new_task(ttl);
    task.created_at -= age;
    apply_complete(&mut task, json!("done"));
    task
}

/// How long ago [`Peer::fill_finished`] makes tasks with `ttl`.
fn expired_age(ttl: Duration) -> Duration {
    ttl + Duration::from_secs(1)
}

/// The system clock, `behind` it: a filler that makes tasks in the past.
#[derive(Debug)]
struct Behind(Duration);

/// The system clock, set back by as many nanoseconds as it holds (none but
/// while a handle learns tasks it will find expired at its sweep).
#[derive(Debug, Default)]
pub struct Shifted(std::sync::atomic::AtomicU64);

impl taskstore::Clock for Shifted {
    fn now(&self) -> OffsetDateTime {
        let back = self.0.load(std::sync::atomic::Ordering::Relaxed);
        OffsetDateTime::now_utc() - Duration::from_nanos(back)
    }
}

impl taskstore::Clock for Behind {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() - self.0
    }
}

fn apply_update(task: &mut Task, key: &str, value: u64) {
    task.metadata.insert(key.to_owned(), json!(value));
    task.last_updated_at = OffsetDateTime::now_utc();
    task.revision += 1;
}

fn apply_renew(task: &mut Task) {
    task.lease_expires_at = Some(OffsetDateTime::now_utc() + Duration::from_secs(30));
    task.revision += 1;
}

fn apply_complete(task: &mut Task, result: Value) {
    task.status = TaskStatus::Completed;
    task.result = Some(result);
    task.last_updated_at = OffsetDateTime::now_utc();
    task.revision += 1;
}

fn live(task: Task) -> Option<Task> {
    (!task.is_expired_at(OffsetDateTime::now_utc())).then_some(task)
}

/// Times as SQLite keeps them: Unix nanoseconds in an `INTEGER` (good until 2262).
fn nanos(t: OffsetDateTime) -> i64 {
    t.unix_timestamp_nanos() as i64
}

fn expires_nanos(task: &Task) -> Option<i64> {
    task.expires_at().map(nanos)
}

// ---------------------------------------------------------------- taskstore

/// A handle on a file store, and its clock (the system's unless shifted).
pub struct Taskstore(pub FileStore, Arc<Shifted>);

impl Taskstore {
    pub fn open(dir: &Path, durability: Durability) -> Taskstore {
        let clock = Arc::new(Shifted::default());
        Taskstore(
            FileStore::builder(dir)
                .durability(durability)
                .max_active(usize::MAX)
                .clock(clock.clone())
                .open()
                .unwrap(),
            clock,
        )
    }
}

impl Peer for Taskstore {
    fn name(&self) -> &'static str {
        "taskstore"
    }
    fn create(&self, ttl: Option<Duration>) -> TaskId {
        let mut new = NewTask::new();
        if let Some(ttl) = ttl {
            new = new.ttl(ttl);
        }
        self.0.create(new).unwrap().id
    }
    fn get(&self, id: &TaskId) -> Option<Task> {
        self.0.get(id).unwrap()
    }
    fn update(&self, id: &TaskId, key: &str, value: u64) -> Task {
        self.0
            .update(id, TaskUpdate::new().metadata(key, value))
            .unwrap()
            .into_task()
    }
    fn complete(&self, id: &TaskId, result: Value) -> bool {
        self.0.complete(id, result).unwrap().is_applied()
    }
    fn renew_all(&self, ids: &[TaskId]) -> usize {
        self.0
            .renew_leases_of(ids)
            .into_iter()
            .filter(|renewed| renewed.as_ref().is_ok_and(|t| t.is_applied()))
            .count()
    }
    fn delete(&self, id: &TaskId) -> bool {
        self.0.delete(id).unwrap()
    }
    fn list_active(&self) -> Vec<Task> {
        self.0.list(&ListQuery::active()).unwrap().tasks
    }
    fn page(&self, limit: usize, after: Option<&str>) -> Page {
        let mut query = ListQuery::active().limit(limit);
        if let Some(cursor) = after {
            query = query.after(cursor);
        }
        let page = self.0.list(&query).unwrap();
        Page {
            tasks: page.tasks,
            next: page.next_cursor,
        }
    }
    fn sweep_expired(&self) -> usize {
        self.0.sweep_expired().unwrap()
    }
    /// A page read an hour back: every task of the fill is live then (a
    /// handle's time never goes back, but it is not ahead of them either,
    /// its last call being before the fill).
    fn learn_tasks(&self) {
        use std::sync::atomic::Ordering;
        self.1.0.store(3_600_000_000_000, Ordering::Relaxed);
        assert!(!self.page(1, None).tasks.is_empty(), "the tasks were live");
        self.1.0.store(0, Ordering::Relaxed);
    }
    /// Through the store, by a second handle without fsync (a fixture is
    /// not what is measured).
    fn fill(&self, n: usize, ttl: Option<Duration>) {
        let filler = Taskstore::open(self.0.path(), Durability::Eventual);
        for _ in 0..n {
            filler.create(ttl);
        }
    }
    /// Through a filler whose clock is behind: it completes each task
    /// before the task expires by its own clock.
    fn fill_finished(&self, n: usize, ttl: Duration) {
        let filler = Taskstore(
            FileStore::builder(self.0.path())
                .durability(Durability::Eventual)
                .max_active(usize::MAX)
                .clock(Arc::new(Behind(expired_age(ttl))))
                .open()
                .unwrap(),
            Arc::new(Shifted::default()),
        );
        for _ in 0..n {
            let id = filler.create(Some(ttl));
            assert!(filler.complete(&id, json!("done")));
        }
    }
}

// -------------------------------------------------------------------- check

/// The same small correctness check for every peer, run before timing, so
/// no peer is timed doing less work.
pub fn check(peer: &dyn Peer) {
    let name = peer.name();
    let id = peer.create(Some(Duration::from_secs(3600)));
    let got = peer
        .get(&id)
        .unwrap_or_else(|| panic!("{name}: created task missing"));
    assert_eq!(got.status, TaskStatus::Working, "{name}");
    let t = peer.update(&id, "k", 7);
    assert_eq!((t.revision, &t.metadata["k"]), (2, &json!(7)), "{name}");
    assert!(
        peer.list_active().iter().any(|t| t.id == id),
        "{name}: listed active"
    );
    assert!(
        peer.complete(&id, json!({"ok": true})),
        "{name}: first completion applies"
    );
    assert!(
        !peer.complete(&id, json!({"ok": false})),
        "{name}: second completion must not"
    );
    let got = peer.get(&id).unwrap();
    assert_eq!(
        (got.status, got.result),
        (TaskStatus::Completed, Some(json!({"ok": true}))),
        "{name}"
    );
    assert!(
        !peer.list_active().iter().any(|t| t.id == id),
        "{name}: finished tasks are not active"
    );
    // Paging: three new tasks, pages of 2 in listing order, equal to the
    // whole listing; then deleted.
    let made: Vec<TaskId> = (0..3).map(|_| peer.create(None)).collect();
    let listed: Vec<TaskId> = peer.list_active().into_iter().map(|t| t.id).collect();
    let (mut paged, mut cursor) = (Vec::new(), None);
    loop {
        let page = peer.page(2, cursor.as_deref());
        assert!(page.tasks.len() <= 2, "{name}: page size");
        paged.extend(page.tasks.into_iter().map(|t| t.id));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, listed, "{name}: pages follow the listing order");
    assert!(made.iter().all(|id| listed.contains(id)), "{name}: listed");
    for id in &made {
        assert!(peer.delete(id), "{name}: delete");
        assert!(!peer.delete(id), "{name}: deleted once");
        assert!(peer.get(id).is_none(), "{name}: deleted task gone");
    }
    let short = peer.create(Some(Duration::from_millis(1)));
    let _unseen = peer.create(Some(Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(5));
    // (taskstore deletes an expired task it meets; the other one is the
    // sweep's.)
    assert!(peer.get(&short).is_none(), "{name}: expired tasks are gone");
    assert!(
        peer.sweep_expired() >= 1,
        "{name}: sweep deletes expired tasks"
    );
}
