//! The peers a user would pick instead of `taskstore`, written as a careful
//! user would write them, behind one small trait so every workload runs the
//! same calls on each. Each peer passes `check` before it is timed.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};
use taskstore::{
    Durability, FileStore, ListQuery, NewTask, Task, TaskId, TaskStatus, TaskStore, TaskUpdate,
};
use time::OffsetDateTime;

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

// ------------------------------------------------------------------- SQLite

/// SQLite in WAL mode, a connection per concurrent caller (a small pool),
/// `synchronous=FULL` for `Immediate`, `NORMAL` for `Eventual`; first writer
/// wins through a conditional `UPDATE`; a partial index keeps "list active"
/// off history.
pub struct Sqlite {
    path: std::path::PathBuf,
    synchronous: &'static str,
    pool: std::sync::Mutex<Vec<Connection>>,
}

impl Sqlite {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Sqlite {
        let sqlite = Sqlite::connect(dir, durability);
        sqlite.with(|c| {
            c.execute_batch(
                "CREATE TABLE IF NOT EXISTS tasks (
                     id TEXT PRIMARY KEY,
                     status TEXT NOT NULL,
                     created_at INTEGER NOT NULL,
                     expires_at INTEGER,
                     body TEXT NOT NULL
                 ) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS active_by_creation ON tasks (created_at, id)
                     WHERE status IN ('working', 'input_required');
                 CREATE INDEX IF NOT EXISTS by_expiry ON tasks (expires_at)
                     WHERE expires_at IS NOT NULL;",
            )
            .unwrap()
        });
        sqlite
    }

    /// The database in `dir`, as it is: a connection is opened (and set up)
    /// on first use.
    pub fn connect(dir: &Path, durability: Durability) -> Sqlite {
        Sqlite {
            path: dir.join("tasks.sqlite"),
            synchronous: match durability {
                Durability::Eventual => "NORMAL",
                _ => "FULL",
            },
            pool: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        let pooled = self.pool.lock().unwrap().pop();
        let mut c = pooled.unwrap_or_else(|| {
            let c = Connection::open(&self.path).unwrap();
            c.busy_timeout(Duration::from_secs(30)).unwrap();
            c.pragma_update(None, "journal_mode", "WAL").unwrap();
            c.pragma_update(None, "synchronous", self.synchronous)
                .unwrap();
            c
        });
        let r = f(&mut c);
        self.pool.lock().unwrap().push(c);
        r
    }

    /// Read, change and conditionally write one task in one immediate
    /// transaction; `None` if the condition no longer held.
    fn modify(
        &self,
        id: &TaskId,
        change: impl FnOnce(&mut Task),
        only_active: bool,
    ) -> Option<Task> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
            let body: String = tx
                .query_row("SELECT body FROM tasks WHERE id = ?1", [id.as_str()], |r| r.get(0))
                .unwrap();
            let mut task: Task = serde_json::from_str(&body).unwrap();
            change(&mut task);
            let sql = if only_active {
                "UPDATE tasks SET status = ?2, body = ?3 WHERE id = ?1 AND status IN ('working', 'input_required')"
            } else {
                "UPDATE tasks SET status = ?2, body = ?3 WHERE id = ?1"
            };
            let n = tx
                .execute(sql, params![id.as_str(), task.status.as_str(), serde_json::to_string(&task).unwrap()])
                .unwrap();
            tx.commit().unwrap();
            (n == 1).then_some(task)
        })
    }

    /// Indexes every task by (`created_at`, id), as a store that pages
    /// all of its tasks would (the other rows' databases index only the
    /// running ones, and pay for no more).
    pub fn index_history(&self) {
        self.with(|c| {
            c.execute_batch("CREATE INDEX IF NOT EXISTS by_creation ON tasks (created_at, id);")
                .unwrap()
        });
    }

    /// One page of at most `limit` tasks of any status in listing order,
    /// after the cursor of the previous page (with [`Sqlite::index_history`]).
    pub fn history_page(&self, limit: usize, after: Option<&str>) -> Page {
        self.keyset_page("1", limit, after)
    }

    /// One page of at most `limit` of the tasks `filter` (an SQL condition)
    /// picks, in listing order, after the cursor of the previous page: a
    /// keyset on (`created_at`, id). One more than the page is read, to
    /// know whether there is a next one (as taskstore does).
    fn keyset_page(&self, filter: &str, limit: usize, after: Option<&str>) -> Page {
        let tasks = self.with(|c| {
            let decode = |r: &rusqlite::Row<'_>| r.get::<_, String>(0);
            let bodies: Vec<String> = match after {
                None => c
                    .prepare_cached(&format!(
                        "SELECT body FROM tasks WHERE {filter} ORDER BY created_at, id LIMIT ?1"
                    ))
                    .unwrap()
                    .query_map([limit as i64 + 1], decode)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                Some(cursor) => {
                    let (created, id) = parse_keyset(cursor);
                    c.prepare_cached(&format!(
                        "SELECT body FROM tasks WHERE {filter} AND (created_at, id) > (?1, ?2)
                         ORDER BY created_at, id LIMIT ?3"
                    ))
                    .unwrap()
                    .query_map(params![created as i64, id, limit as i64 + 1], decode)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect()
                }
            };
            bodies
                .iter()
                .filter_map(|b| live(serde_json::from_str(b).unwrap()))
                .collect()
        });
        paged(tasks, limit)
    }

    /// Inserts finished tasks in one transaction (fixtures).
    pub fn insert_finished(&self, n: usize) {
        self.insert((0..n).map(|_| finished_task(None, Duration::ZERO)));
    }

    /// Inserts `tasks` in one transaction (fixtures).
    fn insert(&self, tasks: impl Iterator<Item = Task>) {
        self.with(|c| {
            let tx = c.transaction().unwrap();
            for task in tasks {
                Sqlite::insert_one(&tx, &task);
            }
            tx.commit().unwrap();
        })
    }

    fn insert_one(c: &Connection, task: &Task) {
        c.prepare_cached(
            "INSERT INTO tasks (id, status, created_at, expires_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .unwrap()
        .execute(params![
            task.id.as_str(),
            task.status.as_str(),
            nanos(task.created_at),
            expires_nanos(task),
            serde_json::to_string(task).unwrap()
        ])
        .unwrap();
    }
}

impl Peer for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn create(&self, ttl: Option<Duration>) -> TaskId {
        let task = new_task(ttl);
        self.with(|c| Sqlite::insert_one(c, &task));
        task.id
    }
    fn get(&self, id: &TaskId) -> Option<Task> {
        let body: Option<String> = self.with(|c| {
            c.prepare_cached("SELECT body FROM tasks WHERE id = ?1")
                .unwrap()
                .query_row([id.as_str()], |r| r.get(0))
                .optional()
                .unwrap()
        });
        live(serde_json::from_str(&body?).unwrap())
    }
    fn update(&self, id: &TaskId, key: &str, value: u64) -> Task {
        self.modify(id, |t| apply_update(t, key, value), false)
            .unwrap()
    }
    fn complete(&self, id: &TaskId, result: Value) -> bool {
        self.modify(id, |t| apply_complete(t, result), true)
            .is_some()
    }
    fn renew_all(&self, ids: &[TaskId]) -> usize {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
            let mut renewed = 0;
            for id in ids {
                let body: String = tx
                    .query_row("SELECT body FROM tasks WHERE id = ?1", [id.as_str()], |r| r.get(0))
                    .unwrap();
                let mut task: Task = serde_json::from_str(&body).unwrap();
                apply_renew(&mut task);
                renewed += tx
                    .execute(
                        "UPDATE tasks SET body = ?2 WHERE id = ?1 AND status IN ('working', 'input_required')",
                        params![id.as_str(), serde_json::to_string(&task).unwrap()],
                    )
                    .unwrap();
            }
            tx.commit().unwrap();
            renewed
        })
    }
    fn delete(&self, id: &TaskId) -> bool {
        // Removed whatever its expiry; `true` only if it was live (as
        // taskstore answers).
        let expires: Option<Option<i64>> = self.with(|c| {
            c.prepare_cached("DELETE FROM tasks WHERE id = ?1 RETURNING expires_at")
                .unwrap()
                .query_row([id.as_str()], |r| r.get(0))
                .optional()
                .unwrap()
        });
        expires.is_some_and(|e| e.is_none_or(|e| e > nanos(OffsetDateTime::now_utc())))
    }
    fn list_active(&self) -> Vec<Task> {
        self.with(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT body FROM tasks WHERE status IN ('working', 'input_required') ORDER BY created_at, id",
                )
                .unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
            rows.filter_map(|b| live(serde_json::from_str(&b.unwrap()).unwrap())).collect()
        })
    }
    fn page(&self, limit: usize, after: Option<&str>) -> Page {
        self.keyset_page("status IN ('working', 'input_required')", limit, after)
    }
    fn sweep_expired(&self) -> usize {
        self.with(|c| {
            c.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [nanos(OffsetDateTime::now_utc())],
            )
            .unwrap()
        })
    }
    /// One transaction.
    fn fill(&self, n: usize, ttl: Option<Duration>) {
        self.insert((0..n).map(|_| new_task(ttl)));
    }
    /// One transaction.
    fn fill_finished(&self, n: usize, ttl: Duration) {
        self.insert((0..n).map(|_| finished_task(Some(ttl), expired_age(ttl))));
    }
}

// --------------------------------------------------------------------- redb

const TASKS: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("tasks");
/// (created_at nanos as big-endian bytes ++ id) of active tasks: "list active"
/// reads this table, not history.
const ACTIVE: redb::TableDefinition<'_, &[u8], &str> = redb::TableDefinition::new("active");
/// (expiry nanos as big-endian bytes ++ id) of tasks with a TTL, to the
/// task's key in `ACTIVE`: the sweep deletes a range of it (the equivalent of
/// SQLite's `DELETE ... WHERE expires_at <= ?` on its index).
const EXPIRY: redb::TableDefinition<'_, &[u8], &[u8]> = redb::TableDefinition::new("expiry");

/// redb with one durable commit per operation (`Durability::None` for
/// `Eventual`), a table of tasks and index tables of active tasks and of
/// expiry times.
pub struct Redb {
    db: Arc<redb::Database>,
    durability: redb::Durability,
}

fn time_key(at: OffsetDateTime, id: &TaskId) -> Vec<u8> {
    let mut k = at.unix_timestamp_nanos().to_be_bytes().to_vec();
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn active_key(task: &Task) -> Vec<u8> {
    time_key(task.created_at, &task.id)
}

fn redb_durability(durability: Durability) -> redb::Durability {
    match durability {
        Durability::Eventual => redb::Durability::None,
        _ => redb::Durability::Immediate,
    }
}

impl Redb {
    /// Opens (creating if needed) the database in `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Redb {
        let db = redb::Database::create(dir.join("tasks.redb")).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(TASKS).unwrap();
        w.open_table(ACTIVE).unwrap();
        w.open_table(EXPIRY).unwrap();
        w.commit().unwrap();
        Redb {
            db: Arc::new(db),
            durability: redb_durability(durability),
        }
    }

    /// The existing database in `dir`, as it is (redb lets one handle per
    /// process hold it).
    pub fn open_existing(dir: &Path, durability: Durability) -> Redb {
        Redb {
            db: Arc::new(redb::Database::open(dir.join("tasks.redb")).unwrap()),
            durability: redb_durability(durability),
        }
    }

    /// Another handle on the same database, committing with `durability`.
    pub fn with_durability(&self, durability: Durability) -> Redb {
        Redb {
            db: self.db.clone(),
            durability: redb_durability(durability),
        }
    }

    fn write<R>(&self, f: impl FnOnce(&redb::WriteTransaction) -> R) -> R {
        let mut w = self.db.begin_write().unwrap();
        w.set_durability(self.durability).unwrap();
        let r = f(&w);
        w.commit().unwrap();
        r
    }

    fn modify(&self, id: &TaskId, change: impl FnOnce(&mut Task)) -> Option<Task> {
        self.write(|w| {
            let mut tasks = w.open_table(TASKS).unwrap();
            let mut task: Task =
                serde_json::from_slice(tasks.get(id.as_str()).unwrap()?.value()).unwrap();
            if task.status.is_terminal() {
                return None;
            }
            change(&mut task);
            tasks
                .insert(id.as_str(), serde_json::to_vec(&task).unwrap().as_slice())
                .unwrap();
            if task.status.is_terminal() {
                w.open_table(ACTIVE)
                    .unwrap()
                    .remove(active_key(&task).as_slice())
                    .unwrap();
            }
            Some(task)
        })
    }

    /// Inserts `task` with its index entries.
    fn insert(w: &redb::WriteTransaction, task: &Task) {
        w.open_table(TASKS)
            .unwrap()
            .insert(
                task.id.as_str(),
                serde_json::to_vec(task).unwrap().as_slice(),
            )
            .unwrap();
        let active = active_key(task);
        if !task.status.is_terminal() {
            w.open_table(ACTIVE)
                .unwrap()
                .insert(active.as_slice(), task.id.as_str())
                .unwrap();
        }
        if let Some(at) = task.expires_at() {
            w.open_table(EXPIRY)
                .unwrap()
                .insert(time_key(at, &task.id).as_slice(), active.as_slice())
                .unwrap();
        }
    }

    /// Inserts finished tasks in one transaction (fixtures).
    pub fn insert_finished(&self, n: usize) {
        self.write(|w| {
            for _ in 0..n {
                Redb::insert(w, &finished_task(None, Duration::ZERO));
            }
        })
    }
}

impl Peer for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn create(&self, ttl: Option<Duration>) -> TaskId {
        let task = new_task(ttl);
        self.write(|w| Redb::insert(w, &task));
        task.id
    }
    fn get(&self, id: &TaskId) -> Option<Task> {
        let r = self.db.begin_read().unwrap();
        let tasks = r.open_table(TASKS).unwrap();
        let bytes = tasks.get(id.as_str()).unwrap()?;
        live(serde_json::from_slice(bytes.value()).unwrap())
    }
    fn update(&self, id: &TaskId, key: &str, value: u64) -> Task {
        self.modify(id, |t| apply_update(t, key, value)).unwrap()
    }
    fn complete(&self, id: &TaskId, result: Value) -> bool {
        self.modify(id, |t| apply_complete(t, result)).is_some()
    }
    fn renew_all(&self, ids: &[TaskId]) -> usize {
        self.write(|w| {
            let mut tasks = w.open_table(TASKS).unwrap();
            let mut renewed = 0;
            for id in ids {
                let mut task: Task =
                    serde_json::from_slice(tasks.get(id.as_str()).unwrap().unwrap().value())
                        .unwrap();
                if task.status.is_terminal() {
                    continue;
                }
                apply_renew(&mut task);
                tasks
                    .insert(id.as_str(), serde_json::to_vec(&task).unwrap().as_slice())
                    .unwrap();
                renewed += 1;
            }
            renewed
        })
    }
    fn delete(&self, id: &TaskId) -> bool {
        self.write(|w| {
            let mut tasks = w.open_table(TASKS).unwrap();
            let Some(bytes) = tasks.remove(id.as_str()).unwrap() else {
                return false;
            };
            let task: Task = serde_json::from_slice(bytes.value()).unwrap();
            drop(bytes);
            drop(tasks);
            w.open_table(ACTIVE)
                .unwrap()
                .remove(active_key(&task).as_slice())
                .unwrap();
            if let Some(at) = task.expires_at() {
                w.open_table(EXPIRY)
                    .unwrap()
                    .remove(time_key(at, &task.id).as_slice())
                    .unwrap();
            }
            live(task).is_some()
        })
    }
    fn list_active(&self) -> Vec<Task> {
        self.page(usize::MAX - 1, None).tasks
    }
    fn page(&self, limit: usize, after: Option<&str>) -> Page {
        let r = self.db.begin_read().unwrap();
        let active = r.open_table(ACTIVE).unwrap();
        let tasks = r.open_table(TASKS).unwrap();
        let from = after.map(|cursor| {
            let (created, id) = parse_keyset(cursor);
            let mut k = created.to_be_bytes().to_vec();
            k.extend_from_slice(id.as_bytes());
            k
        });
        let range = match &from {
            Some(k) => active.range::<&[u8]>((Bound::Excluded(k.as_slice()), Bound::Unbounded)),
            None => active.range::<&[u8]>(..),
        };
        let found = range
            .unwrap()
            .filter_map(|e| {
                let (_, id) = e.unwrap();
                let bytes = tasks.get(id.value()).unwrap()?;
                live(serde_json::from_slice(bytes.value()).unwrap())
            })
            .take(limit.saturating_add(1))
            .collect();
        paged(found, limit)
    }
    fn sweep_expired(&self) -> usize {
        // Every expiry key up to now: those before the next nanosecond.
        let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
        let upper = (now + 1).to_be_bytes();
        self.write(|w| {
            let mut expiry = w.open_table(EXPIRY).unwrap();
            let gone: Vec<(Vec<u8>, Vec<u8>)> = expiry
                .extract_from_if::<&[u8], _>(..upper.as_slice(), |_, _| true)
                .unwrap()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (k.value().to_vec(), v.value().to_vec())
                })
                .collect();
            let mut tasks = w.open_table(TASKS).unwrap();
            let mut active = w.open_table(ACTIVE).unwrap();
            for (key, active_key) in &gone {
                let id = std::str::from_utf8(&key[16..]).unwrap();
                tasks.remove(id).unwrap();
                active.remove(active_key.as_slice()).unwrap();
            }
            gone.len()
        })
    }
    /// One transaction.
    fn fill(&self, n: usize, ttl: Option<Duration>) {
        self.write(|w| {
            for _ in 0..n {
                Redb::insert(w, &new_task(ttl));
            }
        })
    }
    /// One transaction.
    fn fill_finished(&self, n: usize, ttl: Duration) {
        self.write(|w| {
            for _ in 0..n {
                Redb::insert(w, &finished_task(Some(ttl), expired_age(ttl)));
            }
        })
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
