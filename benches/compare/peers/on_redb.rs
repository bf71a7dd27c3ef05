//! redb as a careful user would run it for tasks: one durable commit per
//! operation, index tables for active tasks and expiry.

use super::*;
use redb::{ReadableDatabase, ReadableTable};

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
