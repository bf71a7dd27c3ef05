//! SQLite as a careful user would run it for tasks: WAL, a small pool of
//! connections, a conditional `UPDATE` for first-writer-wins.

use super::*;
use rusqlite::{Connection, OptionalExtension, params};

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
