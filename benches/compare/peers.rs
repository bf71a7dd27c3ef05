//! The peers a user would pick instead of `taskstore`, written as a careful
//! user would write them, behind one small trait so every workload runs the
//! same calls on each. Each peer passes `check` before it is timed.

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
/// and bump the revision, TTL from creation, list active in creation order.
pub trait Peer: Send + Sync {
    fn name(&self) -> &'static str;
    fn create(&self, ttl: Option<Duration>) -> TaskId;
    fn get(&self, id: &TaskId) -> Option<Task>;
    fn update(&self, id: &TaskId, key: &str, value: u64) -> Task;
    /// `true` if this call's completion applied (first writer wins).
    fn complete(&self, id: &TaskId, result: Value) -> bool;
    fn list_active(&self) -> Vec<Task>;
    fn sweep_expired(&self) -> usize;
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

fn apply_update(task: &mut Task, key: &str, value: u64) {
    task.metadata.insert(key.to_owned(), json!(value));
    task.last_updated_at = OffsetDateTime::now_utc();
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

fn expires_ms(task: &Task) -> Option<i64> {
    task.expires_at()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

// ---------------------------------------------------------------- taskstore

pub struct Taskstore(pub FileStore);

impl Taskstore {
    pub fn open(dir: &Path, durability: Durability) -> Taskstore {
        Taskstore(
            FileStore::builder(dir)
                .durability(durability)
                .max_active(usize::MAX)
                .open()
                .unwrap(),
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
    fn list_active(&self) -> Vec<Task> {
        self.0.list(&ListQuery::active()).unwrap().tasks
    }
    fn sweep_expired(&self) -> usize {
        self.0.sweep_expired().unwrap()
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
    pub fn open(dir: &Path, durability: Durability) -> Sqlite {
        let sqlite = Sqlite {
            path: dir.join("tasks.sqlite"),
            synchronous: match durability {
                Durability::Eventual => "NORMAL",
                _ => "FULL",
            },
            pool: std::sync::Mutex::new(Vec::new()),
        };
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

    /// Inserts finished tasks in one transaction (fixtures).
    pub fn insert_finished(&self, n: usize) {
        self.with(|c| {
            let tx = c.transaction().unwrap();
            for _ in 0..n {
                let mut task = new_task(None);
                apply_complete(&mut task, json!("done"));
                tx.execute(
                    "INSERT INTO tasks (id, status, created_at, expires_at, body) VALUES (?1, ?2, ?3, NULL, ?4)",
                    params![task.id.as_str(), task.status.as_str(), now_ms(), serde_json::to_string(&task).unwrap()],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        })
    }
}

impl Peer for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }
    fn create(&self, ttl: Option<Duration>) -> TaskId {
        let task = new_task(ttl);
        self.with(|c| {
            c.execute(
                "INSERT INTO tasks (id, status, created_at, expires_at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    task.id.as_str(),
                    task.status.as_str(),
                    (task.created_at.unix_timestamp_nanos() / 1000) as i64,
                    expires_ms(&task),
                    serde_json::to_string(&task).unwrap()
                ],
            )
            .unwrap()
        });
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
    fn sweep_expired(&self) -> usize {
        self.with(|c| {
            c.execute(
                "DELETE FROM tasks WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [now_ms()],
            )
            .unwrap()
        })
    }
}

// --------------------------------------------------------------------- redb

const TASKS: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("tasks");
/// (created_at nanos as big-endian bytes ++ id) of active tasks: "list active"
/// reads this table, not history.
const ACTIVE: redb::TableDefinition<'_, &[u8], &str> = redb::TableDefinition::new("active");

/// redb with one durable commit per operation (`Durability::None` for
/// `Eventual`), a table of tasks and an index table of active ones.
pub struct Redb {
    db: Arc<redb::Database>,
    durability: redb::Durability,
}

fn active_key(task: &Task) -> Vec<u8> {
    let mut k = task
        .created_at
        .unix_timestamp_nanos()
        .to_be_bytes()
        .to_vec();
    k.extend_from_slice(task.id.as_str().as_bytes());
    k
}

impl Redb {
    pub fn open(dir: &Path, durability: Durability) -> Redb {
        let db = redb::Database::create(dir.join("tasks.redb")).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(TASKS).unwrap();
        w.open_table(ACTIVE).unwrap();
        w.commit().unwrap();
        Redb {
            db: Arc::new(db),
            durability: match durability {
                Durability::Eventual => redb::Durability::None,
                _ => redb::Durability::Immediate,
            },
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

    pub fn insert_finished(&self, n: usize) {
        let w = self.db.begin_write().unwrap();
        {
            let mut tasks = w.open_table(TASKS).unwrap();
            for _ in 0..n {
                let mut task = new_task(None);
                apply_complete(&mut task, json!("done"));
                tasks
                    .insert(
                        task.id.as_str(),
                        serde_json::to_vec(&task).unwrap().as_slice(),
                    )
                    .unwrap();
            }
        }
        w.commit().unwrap();
    }
}

impl Peer for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn create(&self, ttl: Option<Duration>) -> TaskId {
        let task = new_task(ttl);
        self.write(|w| {
            w.open_table(TASKS)
                .unwrap()
                .insert(
                    task.id.as_str(),
                    serde_json::to_vec(&task).unwrap().as_slice(),
                )
                .unwrap();
            w.open_table(ACTIVE)
                .unwrap()
                .insert(active_key(&task).as_slice(), task.id.as_str())
                .unwrap();
        });
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
    fn list_active(&self) -> Vec<Task> {
        let r = self.db.begin_read().unwrap();
        let active = r.open_table(ACTIVE).unwrap();
        let tasks = r.open_table(TASKS).unwrap();
        active
            .iter()
            .unwrap()
            .filter_map(|e| {
                let (_, id) = e.unwrap();
                let bytes = tasks.get(id.value()).unwrap()?;
                live(serde_json::from_slice(bytes.value()).unwrap())
            })
            .collect()
    }
    fn sweep_expired(&self) -> usize {
        let now = OffsetDateTime::now_utc();
        self.write(|w| {
            let mut tasks = w.open_table(TASKS).unwrap();
            let expired: Vec<Task> = tasks
                .iter()
                .unwrap()
                .map(|e| serde_json::from_slice::<Task>(e.unwrap().1.value()).unwrap())
                .filter(|t| t.is_expired_at(now))
                .collect();
            let mut active = w.open_table(ACTIVE).unwrap();
            for t in &expired {
                tasks.remove(t.id.as_str()).unwrap();
                active.remove(active_key(t).as_slice()).unwrap();
            }
            expired.len()
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
