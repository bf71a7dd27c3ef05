//! [`PgBackend`]: whole tasks in one table, each write one statement.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, ToSql};
use time::OffsetDateTime;

use crate::backend::{
    Backend, Change, Decide, Insert, Modified, Record, Scan, Scanned, Scope, Skipped, Swap,
    UnreadableAction, is_current, modify_from,
};
use crate::changes::ChangeFeed;
use crate::error::{Error, Known, Result};
use crate::id::TaskId;
use crate::task::Task;

use super::clock::{ServerClock, ServerTime};
use super::feed::Listener;
use super::pool::{Lease, NoConnection, Pool};
use super::recent::Recent;
use super::sql::{self, Sql};

/// The storage of a [`PgStore`](crate::PgStore): one table in a PostgreSQL
/// schema, shared by every handle on every host that connects to it.
///
/// Each write is one statement, committed before it returns (PostgreSQL's
/// durability: with `synchronous_commit = on`, the default, a returned write
/// is in the server's flushed WAL). Replacing and removing match the
/// version read (`id`, `created_at_ns`, `revision`) in the statement's
/// `WHERE`: the row lock decides races between hosts, and nothing is held
/// between statements.
///
/// The active-task cap is exact across hosts: a counter row, raised only
/// while below the cap in the insert's statement (which fails, so that
/// nothing of it commits, when the counter did not count its row), lowered
/// in the same statement as the terminal write or the removal of an active
/// task.
pub struct PgBackend {
    pool: Arc<Pool>,
    sql: Arc<Sql>,
    clock: Option<Arc<ServerClock>>,
    /// The versions this handle last wrote: `modify` decides on them and
    /// writes conditionally, without loading first.
    recent: Recent,
}

impl fmt::Debug for PgBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgBackend")
            .field("schema", &self.sql.schema)
            .field("pool_size", &self.pool.size())
            .finish_non_exhaustive()
    }
}

/// The largest task (its JSON, in bytes) this backend stores: 1 MiB under
/// 1 GiB. PostgreSQL holds at most 1 GiB less one byte in one value, and
/// takes no message of a client's larger than that; a task's JSON goes as
/// one value of one statement, beside its few other parameters (its id,
/// times, status, the notify channel: well under the 1 MiB left). A batch
/// of tasks larger than that together fails as one (the server drops its
/// connection), and each of its tasks is then written alone.
const PG_LARGEST_TASK: usize = (1 << 30) - (1 << 20);

/// The name every error of this backend carries.
pub(crate) const BACKEND: &str = "postgres";

pub(crate) fn failed(op: impl Into<String>, source: postgres::Error) -> Error {
    Error::backend(BACKEND, op, Described(source))
}

/// A client error that says what the server said: `postgres::Error` alone
/// displays as "db error" and leaves the server's message to its source.
/// Its own source is the client's error.
#[derive(Debug)]
struct Described(postgres::Error);

impl std::fmt::Display for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            // The server names the statement its session refused, and the
            // store's writes are `SELECT`s around their `INSERT` or
            // `UPDATE`: "cannot execute SELECT in a read-only transaction"
            // says nothing of why a write failed.
            Some(db) if *db.code() == postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION => {
                write!(
                    f,
                    "the database is read-only (SQLSTATE {}: a standby, or \
                     `default_transaction_read_only` set for the database, role or server): \
                     its sessions take no writes, and nothing was written",
                    db.code().code()
                )
            }
            Some(db) => {
                write!(
                    f,
                    "{} {}: {}",
                    db.severity(),
                    db.code().code(),
                    db.message()
                )?;
                if let Some(detail) = db.detail() {
                    write!(f, " ({detail})")?;
                }
                Ok(())
            }
            None => match std::error::Error::source(&self.0) {
                Some(cause) => write!(f, "{}: {cause}", self.0),
                None => write!(f, "{}", self.0),
            },
        }
    }
}

impl std::error::Error for Described {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether a statement that failed with its connection is made again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Again {
    /// Never, once sent: it may have written (a write whose reply was
    /// lost is recovered by reading what is stored instead, and made again
    /// only if that shows it changed nothing: [`Found::Untouched`]). One
    /// whose preparation failed with its connection was never sent, and is
    /// made again as a read is.
    Never,
    /// Once, on another connection, if it failed with its connection (not
    /// the server's refusal: [`may_end_session`](super::pool::may_end_session))
    /// before any row came: it writes nothing, so making it again changes
    /// nothing. A connection the server ended moments after its last use
    /// (a restart, a failover, an administrator's `pg_terminate_backend`)
    /// is not seen closed when taken from the pool, and the statement the
    /// next call sends on it fails: a read then fails no caller.
    Read,
}

/// `e`, known to have come before its statement was sent
/// ([`Known::Unsent`]: no connection, none free within the wait, or the
/// connect failed, a `FATAL` at start-up among them: `max_connections`
/// reached, the server starting up; or the statement's preparation
/// failed), which therefore changed nothing.
fn unsent(e: Error) -> Error {
    e.known(Known::Unsent)
}

/// `result` of a write that no earlier statement of its call may have
/// applied: a failure that changed nothing ([`refused`]) is the call's too
/// ([`Error::known_to_have_changed_nothing`]), so that the store's rules
/// neither leave a claim to lapse nor undo a create for it.
fn known_unchanged<T>(result: Result<T>) -> Result<T> {
    result.map_err(|e| {
        if refused(&e) {
            e.known_to_have_changed_nothing()
        } else {
            e
        }
    })
}

/// The columns a task is stored with beside its JSON.
struct Columns<'a> {
    id: &'a str,
    created_at_ns: i64,
    revision: i64,
    status: &'static str,
    active: bool,
    expires_at_ns: Option<i64>,
    json: &'a str,
}

impl<'a> Columns<'a> {
    fn of(record: &'a Record, op: &str) -> Result<Columns<'a>> {
        let task = record.task();
        let json = text(record.json(), op, &task.id)?;
        Ok(Columns {
            id: task.id.as_str(),
            created_at_ns: nanos(task.created_at, op, &task.id)?,
            revision: revision(task, op)?,
            status: task.status.as_str(),
            active: !task.is_terminal(),
            expires_at_ns: task.expires_at().map(saturating_nanos),
            json,
        })
    }
}

/// A task's JSON as the text column holds it.
fn text<'a>(json: &'a [u8], op: &str, id: &TaskId) -> Result<&'a str> {
    std::str::from_utf8(json).map_err(|e| Error::backend(BACKEND, format!("{op} task {id}"), e))
}

/// A version's stored JSON as the text column holds it, if known.
fn stored_json<'a>(json: Option<&'a [u8]>, op: &str, id: &TaskId) -> Result<Option<&'a str>> {
    json.map(|json| text(json, op, id)).transpose()
}

/// `at` in Unix nanoseconds, the column type of every instant: exact to
/// the nanosecond (a `timestamptz` keeps microseconds only), from 1677 to
/// 2262.
fn nanos(at: OffsetDateTime, op: &str, id: &TaskId) -> Result<i64> {
    i64::try_from(at.unix_timestamp_nanos()).map_err(|_| {
        Error::backend(
            BACKEND,
            format!("{op} task {id}"),
            format!("its time {at} is outside the years 1677 to 2262 this backend stores"),
        )
    })
}

/// `at` in Unix nanoseconds, clamped to the column's range.
pub(crate) fn saturating_nanos(at: OffsetDateTime) -> i64 {
    let nanos = at.unix_timestamp_nanos();
    i64::try_from(nanos).unwrap_or(if nanos < 0 { i64::MIN } else { i64::MAX })
}

fn revision(task: &Task, op: &str) -> Result<i64> {
    i64::try_from(task.revision).map_err(|_| {
        Error::backend(
            BACKEND,
            format!("{op} task {}", task.id),
            format!("revision {} is over the column's range", task.revision),
        )
    })
}

fn decode(id: &str, json: &str) -> std::result::Result<Task, String> {
    let task: Task = serde_json::from_str(json).map_err(|e| e.to_string())?;
    if task.id.as_str() != id {
        return Err(format!("the row holds task {}", task.id));
    }
    Ok(task)
}

/// `task`, read from a row listed at `created_at_ns`, if it lists there:
/// a task whose creation time is another (a hand edit of its `createdAt`)
/// is unreadable for a scan, which would return it out of order, and whose
/// caller pages on from the task's position, not the row's, past every row
/// between (`pg::a_row_listed_out_of_its_place_is_reported_and_hides_no_task_after_it`).
fn listed_in_place(task: Task, created_at_ns: i64) -> std::result::Result<Task, String> {
    if task.created_at.unix_timestamp_nanos() == i128::from(created_at_ns) {
        return Ok(task);
    }
    Err(format!(
        "its task was created at {}, but its row lists it at {created_at_ns} ns since the epoch",
        task.created_at
    ))
}

/// `task`, read from a row `scan` picked by its columns (`active`,
/// `status`), if it is what they say: a task of another status (a hand
/// edit of its `status`) is unreadable for the scan, which would drop it
/// from the page unsaid
/// (`pg::a_row_whose_status_is_not_its_columns_is_reported_not_left_out_unsaid`).
fn picked_as_its_columns(task: Task, scan: &Scan) -> std::result::Result<Task, String> {
    let picked = (scan.scope != Scope::Active || !task.status.is_terminal())
        && scan.status.is_none_or(|s| s == task.status);
    if picked {
        return Ok(task);
    }
    Err(format!(
        "its task is {}, which is not what its row's columns say",
        task.status.as_str()
    ))
}

impl PgBackend {
    pub(crate) fn new(
        pool: Arc<Pool>,
        sql: Arc<Sql>,
        clock: Option<Arc<ServerClock>>,
    ) -> PgBackend {
        PgBackend {
            pool,
            sql,
            clock,
            recent: Recent::default(),
        }
    }

    /// The offset to the server's clock as last measured, if the store goes
    /// by it ([`TimeSource::Server`](crate::TimeSource::Server)).
    pub fn server_time(&self) -> Option<ServerTime> {
        self.clock.as_ref().map(|c| c.server_time())
    }

    /// The schema this backend's table lives in.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// The notification channel every write of this schema notifies
    /// (`taskstore:<schema>`, the task id as payload), unless the handle
    /// was opened without change notices.
    pub fn channel(&self) -> &str {
        &self.sql.channel
    }

    fn connection(&self, op: impl FnOnce() -> String) -> Result<Lease<'_>> {
        if let Some(clock) = &self.clock {
            clock.refresh_if_due();
        }
        self.pool.get().map_err(|e| {
            let unconnected = matches!(e, NoConnection::Connect(..));
            let e = unsent(e.into_error(format!("connect to {}", op())));
            if unconnected {
                e.known(Known::Unconnected)
            } else {
                e
            }
        })
    }

    /// Runs `sql` with `params` on a pooled connection.
    fn query(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        self.rows(op, sql, params, Again::Never)
    }

    /// [`query`](Self::query) of a statement that writes nothing
    /// ([`Again::Read`]).
    fn read(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<postgres::Row>> {
        self.rows(op, sql, params, Again::Read)
    }

    /// The rows of `sql` run with `params` ([`run_each`](Self::run_each)).
    fn rows(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        again: Again,
    ) -> Result<Vec<postgres::Row>> {
        let mut rows = Vec::new();
        self.run_each(op, sql, params, again, |row| {
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Runs `sql` with `params` on a pooled connection, handing each row to
    /// `each` as the server sends it (the first error `each` returns ends
    /// the query): the client reads no further ahead than the row taken, so
    /// a caller that keeps less than each row holds one row at a time, not
    /// the result. Made again as `again` says.
    fn run_each(
        &self,
        op: &dyn Fn() -> String,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        again: Again,
        mut each: impl FnMut(postgres::Row) -> Result<()>,
    ) -> Result<()> {
        let mut tried = false;
        loop {
            let mut conn = self.connection(op)?;
            // Whether a row reached `each`: then the statement is not made
            // again, whatever it is.
            let mut handed = false;
            // The driver's error (`Err`), or what `each` made of the rows.
            let run = (|| {
                let statement = conn.prepared(sql).map_err(|e| (e, true))?;
                let mut rows = conn
                    .client
                    .query_raw(&statement, params.iter().copied())
                    .map_err(|e| (e, false))?;
                while let Some(row) = rows.next().map_err(|e| (e, false))? {
                    handed = true;
                    if let Err(e) = each(row) {
                        return Ok(Err(e));
                    }
                }
                Ok(Ok(()))
            })();
            let (e, preparing) = match run {
                Ok(done) => return done,
                Err(failure) => failure,
            };
            let e = conn.failed(e);
            // A statement whose preparation failed was never sent, and is
            // made again as a read is, whatever it writes.
            let unsent_or_read = preparing || (again == Again::Read && !handed);
            if unsent_or_read && !tried && super::pool::may_end_session(&e) {
                // Closed as it goes back; the next is another.
                drop(conn);
                tried = true;
                continue;
            }
            let e = failed(op(), e);
            return Err(if preparing { unsent(e) } else { e });
        }
    }

    /// Column `index` of `row`, selected from the store's `table` for
    /// `op`. A column whose type a hand edit changed (`ALTER TABLE … TYPE`),
    /// or that holds a NULL the store never writes, is an error naming the
    /// operation, the column and the type found, not a panic: checked here,
    /// where the row is read, it is caught whenever the change was made
    /// (and costs what `Row::get` does, which checks the same and panics).
    /// The counts the statements compute themselves are read with `get`:
    /// their type is the statement's, which no edit of a table changes.
    fn column<'a, T: FromSql<'a>>(
        &self,
        row: &'a postgres::Row,
        index: usize,
        table: &str,
        op: &dyn Fn() -> String,
    ) -> Result<T> {
        row.try_get(index).map_err(|e| {
            let (name, kind) = row
                .columns()
                .get(index)
                .map_or(("?", "?".to_owned()), |c| (c.name(), c.type_().to_string()));
            Error::backend(
                BACKEND,
                op(),
                format!(
                    "column {}.{table}.{name} (of type {kind}) cannot be read: {}; was the \
                     table changed outside the store?",
                    self.sql.schema,
                    Described(e)
                ),
            )
        })
    }

    /// Where task `id` is stored, as an error or a report names it:
    /// `<schema>.tasks row "<id>"`.
    fn row_of(&self, id: &str) -> String {
        format!("{}.tasks row {id:?}", self.sql.schema)
    }

    /// The row of task `id`, whose task cannot be decoded (`reason`): as
    /// the file store's undecodable task file, [`Error::Corrupt`] naming it.
    fn corrupt(&self, id: &str, reason: String) -> Error {
        Error::corrupt(self.row_of(id), reason)
    }

    /// What a conditional write of `current` did, from the one-row count
    /// it returned: done, or missed (then the stored version, read again).
    fn swapped(
        &self,
        rows: &[postgres::Row],
        current: &Task,
        stored: Option<&str>,
        op: &str,
    ) -> Result<Swap> {
        let written: i64 = rows.first().map_or(0, |row| row.get(0));
        if written == 1 {
            return Ok(Swap::Done);
        }
        let now = self.current(&current.id, op)?;
        if let Some(now) = &now
            && stored.is_none()
            && (now.created_at, now.revision) == (current.created_at, current.revision)
        {
            // Missed, yet the task reads as the version the write was
            // conditioned on: the row's columns say another. A write would
            // miss again, for ever. (A write conditioned on a guess's JSON
            // too misses another version that shares its creation time and
            // revision: it is decided again on the version stored.)
            return Err(Error::backend(
                BACKEND,
                format!("{op} task {}", current.id),
                format!(
                    "the row's task (revision {}) disagrees with the row's own columns: \
                     the row was changed outside the store",
                    now.revision
                ),
            ));
        }
        Ok(Swap::Changed(now))
    }

    /// [`Backend::insert`]'s one try: tried again for as long as the task
    /// in its place is removed between the insert and the read of it, and
    /// once after making the active-task counter's row again if the insert
    /// was refused because the row is gone (deleted by hand): with the
    /// count of the active rows, the sweep's [`recount`](Self::recount).
    fn try_insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        let mut recounted = false;
        loop {
            match self.try_insert_once(record, max_active)? {
                Some(Insert::Full) if !recounted && !self.has_counter()? => {
                    self.recount()?;
                    recounted = true;
                }
                Some(inserted) => return Ok(inserted),
                None => {}
            }
        }
    }

    /// Whether the active-task counter's row is there: an insert the
    /// counter did not count was refused by the cap, or found no row.
    fn has_counter(&self) -> Result<bool> {
        let op = || {
            format!(
                "look for the active-task counter of schema {}",
                self.sql.schema
            )
        };
        Ok(!self.read(&op, &self.sql.counter, &[])?.is_empty())
    }

    /// Whether the active-task counter's row is there and counts the
    /// active rows, in one snapshot, taking no lock
    /// (`sql.counter_and_active`).
    fn counter_agrees(&self) -> Result<bool> {
        let op = || format!("count the active tasks of schema {}", self.sql.schema);
        let rows = self.read(&op, &self.sql.counter_and_active, &[])?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        let counter: Option<i64> = self.column(row, 0, "counters", &op)?;
        Ok(counter == Some(row.get::<_, i64>(1)))
    }

    /// One insert: `None` if a task was in its place and gone by the time
    /// it was read.
    fn try_insert_once(&self, record: &Record, max_active: usize) -> Result<Option<Insert>> {
        let task = record.task();
        let op = || format!("insert task {}", task.id);
        let columns = Columns::of(record, "insert")?;
        let cap = i64::try_from(max_active).unwrap_or(i64::MAX);
        // One statement, committed on its own: a refusal by the cap fails
        // it (`sql::UNCOUNTED`), and nothing of it commits.
        let rows = self.query(
            &op,
            &self.sql.insert,
            &[
                &columns.id,
                &columns.created_at_ns,
                &columns.revision,
                &columns.status,
                &columns.active,
                &columns.expires_at_ns,
                &columns.json,
                &cap,
                &self.sql.channel,
            ],
        );
        let inserted: i64 = match rows {
            Ok(rows) => match rows.first() {
                Some(row) => self.column(row, 0, "tasks", &op)?,
                None => return Err(Error::backend(BACKEND, op(), "the insert returned no row")),
            },
            Err(e) if db_error(&e).is_some_and(sql::uncounted) => return Ok(Some(Insert::Full)),
            Err(e) => return Err(e),
        };
        if inserted == 0 {
            // Removed since (`None`): tried again.
            return Ok(self.current(&task.id, "insert")?.map(Insert::Exists));
        }
        self.recent.remember(record);
        Ok(Some(Insert::Done))
    }

    /// Counts the active rows again into the counter, if a change made
    /// outside the store put it out (rows deleted by hand, a table
    /// restored from a dump, the counter's own row deleted), for a sweep
    /// that found it out ([`counter_agrees`](Self::counter_agrees)) and
    /// for a create that finds the row gone: the counter's
    /// row lock first (the row made again at 0 if it is gone), then the
    /// count in a statement of its own, whose snapshot sees every write
    /// that changed the counter before (each write changes the row and the
    /// counter in one statement). Returns the counts before (`None`: no
    /// row) and after if it was out.
    pub(crate) fn recount(&self) -> Result<Option<(Option<i64>, i64)>> {
        let op = || format!("count the active tasks of schema {}", self.sql.schema);
        let mut conn = self.connection(op)?;
        // A failure that may have ended the connection closes it when
        // given back (`Connection::failed`).
        let broken = std::cell::Cell::new(false);
        let counted = self.recount_on(&mut conn.client, &|e| {
            broken.set(broken.get() || super::pool::may_end_session(&e));
            failed(op(), e)
        });
        if broken.get() {
            conn.fail();
        }
        counted
    }

    /// [`recount`](Self::recount) on `client`, each of the driver's errors
    /// made the store's by `failed`.
    fn recount_on(
        &self,
        client: &mut postgres::Client,
        failed: &dyn Fn(postgres::Error) -> Error,
    ) -> Result<Option<(Option<i64>, i64)>> {
        let op = || format!("count the active tasks of schema {}", self.sql.schema);
        let mut tx = client.transaction().map_err(failed)?;
        let lock = |tx: &mut postgres::Transaction<'_>| {
            tx.query_opt(&self.sql.lock_counter, &[])
                .map_err(failed)?
                .map(|row| self.column::<i64>(&row, 0, "counters", &op))
                .transpose()
        };
        let was = match lock(&mut tx)? {
            Some(was) => Some(was),
            None => {
                let made = tx.execute(&self.sql.make_counter, &[]).map_err(failed)?;
                // Made here (`None`), or by another sweep meanwhile: then
                // counted as ever.
                let now = lock(&mut tx)?;
                if made == 1 { None } else { now }
            }
        };
        let now = match tx.query_opt(&self.sql.recount, &[]).map_err(failed)? {
            Some(row) => Some(row.get::<_, i64>(0)),
            // Made again at 0, and 0 is right.
            None if was.is_none() => Some(0),
            None => None,
        };
        tx.commit().map_err(failed)?;
        if let Some(now) = now {
            match was {
                Some(was) => {
                    tracing::warn!(schema = %self.sql.schema, was, now, "the active-task counter was out (a change made outside the store); counted again")
                }
                None => {
                    tracing::warn!(schema = %self.sql.schema, now, "the active-task counter's row was gone (deleted outside the store); made again")
                }
            }
        }
        Ok(now.map(|now| (was, now)))
    }

    /// The stored version of `id`, read after a conditional write missed.
    fn current(&self, id: &TaskId, op: &str) -> Result<Option<Task>> {
        let op = || format!("{op} task {id}");
        let rows = self.read(&op, &self.sql.load, &[&id.as_str()])?;
        rows.first()
            .map(|row| {
                decode(id.as_str(), self.column(row, 0, "tasks", &op)?)
                    .map_err(|reason| self.corrupt(id.as_str(), reason))
            })
            .transpose()
    }

    fn delta(current: &Task, next: &Task) -> i64 {
        i64::from(!next.is_terminal()) - i64::from(!current.is_terminal())
    }

    /// The stored versions of `ids`, by id, read after a batch missed them.
    fn current_all(&self, ids: &[&str], op: &str) -> Result<HashMap<String, Result<Task>>> {
        let op = || format!("{op} {} tasks", ids.len());
        let rows = self.read(&op, &self.sql.load_all, &[&ids])?;
        rows.iter()
            .map(|row| {
                let id: String = self.column(row, 0, "tasks", &op)?;
                let task = self.column(row, 1, "tasks", &|| format!("{} (task {id})", op()))?;
                let task = decode(&id, task).map_err(|reason| self.corrupt(&id, reason));
                Ok((id, task))
            })
            .collect()
    }

    /// The outcome of one task of a batch: done, or what is stored now.
    fn settle(
        id: &TaskId,
        done: &HashSet<String>,
        now: &mut HashMap<String, Result<Task>>,
    ) -> Result<Swap> {
        if done.contains(id.as_str()) {
            return Ok(Swap::Done);
        }
        match now.remove(id.as_str()) {
            Some(Ok(task)) => Ok(Swap::Changed(Some(task))),
            Some(Err(e)) => Err(e),
            None => Ok(Swap::Changed(None)),
        }
    }

    /// `replace` for a pass's write (a claim, a reap, renewals), which
    /// must say what became of the task: a write whose reply was lost (the
    /// connection dropped after the commit), or that an earlier batch's
    /// lost reply made already, finds the task stored exactly as it was to
    /// write it, and is done.
    fn replace_found(&self, current: &Task, next: &Record) -> Result<Swap> {
        match self.replace(current, next) {
            Ok(Swap::Changed(Some(stored))) if self.written(&stored, next) => Ok(Swap::Done),
            // A running version of this owner's (a claim: a new epoch and
            // owner; or a renewal of the owner's lease) that stands,
            // written over since by another: this batch's write, or
            // another's over the version read (for a claim, by another
            // pass of this handle), which cannot be told apart. Not
            // "changed by another": its caller would neither report nor
            // disown a task its handle then renews as its own, and a
            // renewal would be made again, two writes for one. A failed
            // write, whose caller leaves a claim to lapse.
            Ok(Swap::Changed(Some(stored)))
                if !next.task().is_terminal() && stored.is_claim_of(next.task()) =>
            {
                Err(Error::backend(
                    BACKEND,
                    format!("replace task {}", current.id),
                    format!(
                        "the batch's reply was lost, and the task holds the epoch ({}) and \
                         owner this write gave it or kept, written over since: whether this \
                         write made it cannot be told",
                        stored.epoch
                    ),
                ))
            }
            // A task gone since, or made again under its id: this batch's
            // write (a claim, a reap, a renewal) may have landed before,
            // and been seen, so the task was not "left alone", nor "not
            // found", either.
            Ok(Swap::Changed(stored))
                if stored
                    .as_ref()
                    .is_none_or(|s| s.created_at != current.created_at) =>
            {
                Err(Error::backend(
                    BACKEND,
                    format!("replace task {}", current.id),
                    "the batch's reply was lost, and the task is gone since (or made again \
                     under its id): whether this write made it before cannot be told",
                ))
            }
            other => other,
        }
    }

    /// Whether `stored` is `record`'s task exactly, as a write of it would
    /// have left it (then remembered, as any version this handle wrote).
    fn written(&self, stored: &Task, record: &Record) -> bool {
        let done = *stored == *record.task();
        if done {
            self.recent.remember(record);
        }
        done
    }

    /// Writes `next` over `current` if that is still the stored version
    /// (and, with `stored`, its JSON exactly that: a guess's). A write
    /// whose reply was lost after the commit (the connection dropped) finds
    /// the task stored exactly as it was to write it, and is done.
    ///
    /// A write that failed with the server's `FATAL` reply, and finds the
    /// task stored as the version it was conditioned on, changed nothing
    /// (a commit would have moved the revision on) and never will: it is
    /// made again once, on another connection ([`Found::Untouched`]).
    fn replace_at(&self, current: &Task, stored: Option<&[u8]>, next: &Record) -> Result<Swap> {
        let mut again = true;
        loop {
            let e = match self.try_replace_at(current, stored, next) {
                Err(e) => e,
                // Made again, it missed the first try, which committed
                // after all: done.
                Ok(Swap::Changed(Some(now))) if !again && self.written(&now, next) => {
                    return Ok(Swap::Done);
                }
                other => return other,
            };
            if refused(&e) {
                // Changed nothing; if the task moved on meanwhile (a write
                // a lock or statement timeout ended while it waited on
                // another's row), that is the answer, as a write that
                // found it changed: not a failure, which a claim would
                // take for one that may stand, and disown (the other's
                // claim, if it was this handle's). Not after a connect
                // that failed: the read would connect again, in vain.
                if e.is_known(Known::Unconnected) {
                    return Err(e);
                }
                return match self.current(&current.id, "replace") {
                    Ok(now) if !now.as_ref().is_some_and(|now| is_current(now, current)) => {
                        Ok(Swap::Changed(now))
                    }
                    _ => Err(e),
                };
            }
            match self.found(&e, next, "replace", Some(current)) {
                Found::Written => return Ok(Swap::Done),
                Found::Untouched if std::mem::take(&mut again) => {}
                Found::Untouched | Found::Neither => return Err(e),
            }
        }
    }

    fn try_replace_at(&self, current: &Task, stored: Option<&[u8]>, next: &Record) -> Result<Swap> {
        let op = || format!("replace task {}", current.id);
        let columns = Columns::of(next, "replace")?;
        let stored = stored_json(stored, "replace", &current.id)?;
        let rows = self.query(
            &op,
            &self.sql.replace,
            &[
                &current.id.as_str(),
                &nanos(current.created_at, "replace", &current.id)?,
                &revision(current, "replace")?,
                &columns.created_at_ns,
                &columns.revision,
                &columns.status,
                &columns.active,
                &columns.expires_at_ns,
                &columns.json,
                &Self::delta(current, next.task()),
                &self.sql.channel,
                &stored,
            ],
        )?;
        let swap = self.swapped(&rows, current, stored, "replace")?;
        match &swap {
            Swap::Done => self.recent.remember(next),
            Swap::Changed(_) => self.recent.forget(&current.id),
        }
        Ok(swap)
    }

    /// Removes `current` if that is still the stored version (and, with
    /// `stored`, its JSON exactly that: a guess's). A removal that failed
    /// with the server's `FATAL` reply, and finds the task stored as that
    /// version, changed nothing and never will, and is made again once, as
    /// a conditional write is ([`Found::Untouched`]; one that finds the
    /// task gone may have committed, or another removed it: it fails,
    /// since only one removal may say it removed the task).
    fn remove_at(&self, current: &Task, stored: Option<&[u8]>) -> Result<Swap> {
        match self.try_remove_at(current, stored) {
            Err(e) if !refused(&e) && ended_by_server(&e) => {
                match self.current(&current.id, "remove") {
                    Ok(now) if ended_untouched(&e, now.as_ref(), current) => {
                        self.try_remove_at(current, stored)
                    }
                    _ => Err(e),
                }
            }
            removed => removed,
        }
    }

    fn try_remove_at(&self, current: &Task, stored: Option<&[u8]>) -> Result<Swap> {
        let op = || format!("remove task {}", current.id);
        let Ok(created_at_ns) = nanos(current.created_at, "remove", &current.id) else {
            // No row holds a version made at a time no row can store (a
            // failed create's, undone): whatever is stored differs.
            return Ok(Swap::Changed(self.current(&current.id, "remove")?));
        };
        let stored = stored_json(stored, "remove", &current.id)?;
        let rows = self.query(
            &op,
            &self.sql.remove,
            &[
                &current.id.as_str(),
                &created_at_ns,
                &revision(current, "remove")?,
                &self.sql.channel,
                &stored,
            ],
        )?;
        // Removed, or changed since: no guess either way.
        self.recent.forget(&current.id);
        self.swapped(&rows, current, stored, "remove")
    }

    /// Conditional writes, one per item (on the version `read` names), as
    /// [`Backend::replace_all`] makes them: in one statement, `batch`,
    /// where it can, and each on its own, `alone`, where not (told why).
    /// A batch keeps no guesses. A batch the server refused (a deadlock, a
    /// statement timeout: its error reply), or never sent (a task out of
    /// range, no connection), changed nothing; one that failed otherwise (its connection
    /// lost) may have committed before its reply: `alone` is told which
    /// ([`sent`]). A task the
    /// batch left out, its row locked by another session
    /// (`sql::unlocked`), is stored as it was read: written on its own
    /// now, after the batch committed, so that only its own write waits
    /// for the lock.
    fn batch<T>(
        &self,
        op: &str,
        items: &[T],
        read: impl Fn(&T) -> &Task,
        batch: impl FnOnce() -> std::result::Result<Vec<Result<Swap>>, Alone>,
        alone: impl Fn(&T, Alone) -> Result<Swap>,
    ) -> Vec<Result<Swap>> {
        for item in items {
            self.recent.forget(&read(item).id);
        }
        if items.len() < 2 || has_duplicates(items.iter().map(|item| &read(item).id)) {
            return Self::each_alone(op, items, read, |item| alone(item, Alone::Unbatched));
        }
        let results = match batch() {
            Ok(results) => results,
            Err(why) => return Self::each_alone(op, items, read, |item| alone(item, why)),
        };
        results
            .into_iter()
            .zip(items)
            .map(|(result, item)| match result {
                Ok(Swap::Changed(Some(now))) if is_current(&now, read(item)) => {
                    alone(item, Alone::LeftOut)
                }
                other => other,
            })
            .collect()
    }

    /// `alone` for each of `items` in turn (writes of `op`, each of its
    /// own, after their batch failed or when there is none). Once one
    /// found no connection (a connect failed: the server down or out of
    /// reach), the rest fail with its error, each naming its own task,
    /// without a connect each: a batch of 300 tasks made 300 connects,
    /// each failing as the first did
    /// (`pg::a_batch_that_failed_with_the_server_down_connects_once_more_not_once_a_task`).
    fn each_alone<T>(
        op: &str,
        items: &[T],
        read: impl Fn(&T) -> &Task,
        alone: impl Fn(&T) -> Result<Swap>,
    ) -> Vec<Result<Swap>> {
        // The first task that found no connection: its id, its error as
        // said, and whether it is known to have changed nothing.
        let mut unconnected: Option<(TaskId, String, bool)> = None;
        let mut results = Vec::with_capacity(items.len());
        for item in items {
            let id = &read(item).id;
            if let Some((first, said, changed_nothing)) = &unconnected {
                let e = Error::backend(
                    BACKEND,
                    format!("{op} task {id}"),
                    format!(
                        "not tried: no connection, as task {first} of the same batch found \
                         just before ({said})"
                    ),
                )
                .known(Known::Unsent)
                .known(Known::Unconnected);
                results.push(Err(if *changed_nothing {
                    e.known_to_have_changed_nothing()
                } else {
                    e
                }));
                continue;
            }
            let result = alone(item);
            if let Err(e) = &result
                && e.is_known(Known::Unconnected)
            {
                unconnected = Some((id.clone(), e.to_string(), e.changed_nothing()));
            }
            results.push(result);
        }
        results
    }

    /// [`Backend::remove_all`] as a [`batch`](Self::batch); `expired`: as
    /// [`Backend::remove_expired`].
    fn remove_batch(&self, tasks: &[Task], expired: bool) -> Vec<Result<Swap>> {
        let alone = |task: &Task, why: Alone| match self.remove(task) {
            Ok(Swap::Changed(None)) if expired && why == Alone::Unanswered => Ok(Swap::Done),
            Err(e) if expired && self.found_removed(&e, task) => Ok(Swap::Done),
            other => other,
        };
        self.batch(
            "remove",
            tasks,
            |task| task,
            || self.try_remove_all(tasks),
            alone,
        )
    }

    /// After a write of `record` failed (`op`) with `e`: what its task,
    /// read back, says of it, if it may have committed (`e` is not one
    /// that changed nothing: [`refused`]). `conditioned_on` is the
    /// version the write was conditioned on (none for an insert, which is
    /// never made again so). A failure that changed nothing is not read
    /// back ([`Found::Neither`]).
    fn found(&self, e: &Error, record: &Record, op: &str, conditioned_on: Option<&Task>) -> Found {
        if refused(e) {
            return Found::Neither;
        }
        match self.current(&record.task().id, op) {
            Ok(Some(stored)) if self.written(&stored, record) => Found::Written,
            Ok(stored)
                if conditioned_on.is_some_and(|at| ended_untouched(e, stored.as_ref(), at)) =>
            {
                Found::Untouched
            }
            _ => Found::Neither,
        }
    }

    /// [`found`](Self::found) for the removal of `task`:
    /// whether it may have committed and the task is gone.
    fn found_removed(&self, e: &Error, task: &Task) -> bool {
        !refused(e) && matches!(self.current(&task.id, "remove"), Ok(None))
    }

    /// The batch of [`replace_all`](Backend::replace_all); why it failed, if
    /// it did ([`sent`]).
    fn try_replace_all(
        &self,
        swaps: &[(Task, Record)],
    ) -> std::result::Result<Vec<Result<Swap>>, Alone> {
        let op = "replace";
        let mut ids = Vec::new();
        let mut created = Vec::new();
        let mut revisions = Vec::new();
        let mut was_active = Vec::new();
        let mut next_created = Vec::new();
        let mut next_revisions = Vec::new();
        let mut statuses = Vec::new();
        let mut active = Vec::new();
        let mut expires = Vec::new();
        let mut json = Vec::new();
        // A task that cannot go in the batch: nothing is sent.
        for (current, next) in swaps {
            let columns = Columns::of(next, op).map_err(|_| Alone::Refused)?;
            ids.push(current.id.as_str());
            created.push(nanos(current.created_at, op, &current.id).map_err(|_| Alone::Refused)?);
            revisions.push(revision(current, op).map_err(|_| Alone::Refused)?);
            was_active.push(!current.is_terminal());
            next_created.push(columns.created_at_ns);
            next_revisions.push(columns.revision);
            statuses.push(columns.status);
            active.push(columns.active);
            expires.push(columns.expires_at_ns);
            json.push(columns.json);
        }
        let rows = self.query(
            &|| format!("{op} {} tasks in one statement", swaps.len()),
            &self.sql.replace_all,
            &[
                &ids,
                &created,
                &revisions,
                &was_active,
                &next_created,
                &next_revisions,
                &statuses,
                &active,
                &expires,
                &json,
                &self.sql.channel,
            ],
        );
        sent(rows, |rows| {
            self.batch_outcome(op, &ids, rows, swaps.iter().map(|(current, _)| &current.id))
        })
    }

    /// The batch of [`remove_all`](Backend::remove_all); why it failed, if
    /// it did ([`sent`]).
    fn try_remove_all(&self, tasks: &[Task]) -> std::result::Result<Vec<Result<Swap>>, Alone> {
        let op = "remove";
        let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        // A task that cannot go in the batch: nothing is sent.
        let created = tasks
            .iter()
            .map(|t| nanos(t.created_at, op, &t.id))
            .collect::<Result<Vec<_>>>()
            .map_err(|_| Alone::Refused)?;
        let revisions = tasks
            .iter()
            .map(|t| revision(t, op))
            .collect::<Result<Vec<_>>>()
            .map_err(|_| Alone::Refused)?;
        let rows = self.query(
            &|| format!("{op} {} tasks in one statement", tasks.len()),
            &self.sql.remove_all,
            &[&ids, &created, &revisions, &self.sql.channel],
        );
        sent(rows, |rows| {
            self.batch_outcome(op, &ids, rows, tasks.iter().map(|t| &t.id))
        })
    }

    /// One result per task of a batch, from the ids the statement wrote.
    fn batch_outcome<'a>(
        &self,
        op: &str,
        ids: &[&str],
        rows: Vec<postgres::Row>,
        order: impl Iterator<Item = &'a TaskId>,
    ) -> Result<Vec<Result<Swap>>> {
        let written = || format!("{op} {} tasks in one statement", ids.len());
        let done = rows
            .iter()
            .map(|row| self.column(row, 0, "tasks", &written))
            .collect::<Result<HashSet<String>>>()?;
        let missed: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| !done.contains(*id))
            .collect();
        let mut now = if missed.is_empty() {
            HashMap::new()
        } else {
            self.current_all(&missed, op)?
        };
        Ok(order.map(|id| Self::settle(id, &done, &mut now)).collect())
    }
}

/// Why a task of a batch is written on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alone {
    /// There is no batch: one task, or a task named twice.
    Unbatched,
    /// The batch changed nothing: the server refused its statement (an
    /// error reply), or it was never sent (a task it could not hold, no
    /// connection: [`Known::Unsent`]).
    Refused,
    /// The batch may have committed: its statement failed without the
    /// server's refusal (its connection lost before its reply), or it
    /// committed and what it wrote could not be read after.
    Unanswered,
    /// The batch committed without it: another session held its row
    /// locked, and it is stored as read.
    LeftOut,
}

/// What a task read back after a write of it failed says of the write
/// ([`PgBackend::found`]).
enum Found {
    /// Stored exactly as the write was to leave it: the write is done (its
    /// reply was lost after the commit).
    Written,
    /// Stored as the version the write was conditioned on, and the write
    /// failed with the server's `FATAL` reply ([`ended_by_server`]): it
    /// changed nothing and never will, and is made again once (a
    /// conditional write alone: an insert that finds no task may have
    /// been deleted since). A connection the server ended a
    /// moment after its last use (a restart, a failover, an
    /// administrator's `pg_terminate_backend`) is not seen closed when
    /// taken from the pool (`pool::LOOK_AFTER`), and the write sent on it
    /// fails: made again on another connection, it fails no caller
    /// (`pg::a_write_on_a_connection_the_server_ended_a_moment_ago_succeeds`).
    Untouched,
    /// Anything else: another's write, or the read failed.
    Neither,
}

/// Whether a write conditioned on `current` that failed with `e`, its task
/// read back as `stored`, changed nothing and never will: the server ended
/// the session ([`ended_by_server`]), and the task is still that version
/// (a commit would have moved its revision on). Such a write is made again
/// once ([`Found::Untouched`]; a removal alike).
fn ended_untouched(e: &Error, stored: Option<&Task>, current: &Task) -> bool {
    ended_by_server(e) && stored.is_some_and(|now| is_current(now, current))
}

/// Whether `e` is the server's word that it ended the session (a `FATAL`
/// reply: an administrator's `pg_terminate_backend`, a restart, a session
/// timeout): the server process that sent it commits nothing after, so a
/// write it had not committed by then never will be. Not a link's failure
/// (a reset, a timeout), after which the server may still be running the
/// statement, and commit it later.
fn ended_by_server(e: &Error) -> bool {
    db_error(e).is_some_and(|db| {
        matches!(
            db.parsed_severity(),
            Some(postgres::error::Severity::Fatal | postgres::error::Severity::Panic)
        )
    })
}

/// The outcome of a batch statement, `rows` its reply: what `read` makes
/// of the rows, or why it failed. Only a failure before it was sent (no
/// connection, [`Known::Unsent`]) or the server's refusal of the statement itself
/// (an `ERROR` reply) says it changed nothing ([`refused`]); any other
/// failure may have come after the commit: a connection lost, a `FATAL`
/// reply (a backend terminated, which may be after its commit), or a read
/// after the statement (`read`) that failed.
fn sent(
    rows: Result<Vec<postgres::Row>>,
    read: impl FnOnce(Vec<postgres::Row>) -> Result<Vec<Result<Swap>>>,
) -> std::result::Result<Vec<Result<Swap>>, Alone> {
    match rows {
        Ok(rows) => read(rows).map_err(|_| Alone::Unanswered),
        Err(e) if refused(&e) => Err(Alone::Refused),
        Err(_) => Err(Alone::Unanswered),
    }
}

/// Whether `e` says its statement changed nothing: it was never sent
/// ([`Known::Unsent`]), or the server refused it (an `ERROR` reply: a statement
/// of its own transaction is rolled back whole). Any other failure may
/// have come after the commit.
fn refused(e: &Error) -> bool {
    e.is_known(Known::Unsent)
        || db_error(e)
            .is_some_and(|db| db.parsed_severity() == Some(postgres::error::Severity::Error))
}

/// The server's error reply `e` carries, if it carries one.
fn db_error(e: &Error) -> Option<&postgres::error::DbError> {
    e.backend_source()?
        .downcast_ref::<Described>()
        .and_then(|described| described.0.as_db_error())
}

/// Whether a batch names one task twice (then it goes one by one: one
/// statement cannot write a row twice).
fn has_duplicates<'a>(mut ids: impl Iterator<Item = &'a TaskId>) -> bool {
    let mut seen = HashSet::new();
    ids.any(|id| !seen.insert(id))
}

impl Backend for PgBackend {
    fn load(&self, id: &TaskId) -> Result<Option<Task>> {
        self.current(id, "load")
    }

    /// One statement for them all (`load_all`). A row that does not decode
    /// is its task's `Error::Corrupt` alone; a statement that fails (the
    /// server out of reach, say) is each task's error, naming the task:
    /// loading each on its own then would try the server once a task.
    fn load_all(&self, ids: &[TaskId]) -> Vec<Result<Option<Task>>> {
        if ids.len() < 2 {
            return ids.iter().map(|id| self.load(id)).collect();
        }
        let names: Vec<&str> = ids.iter().map(TaskId::as_str).collect();
        let mut found = match self.current_all(&names, "load") {
            Ok(found) => found,
            Err(e) => {
                let why = match &e {
                    Error::Backend { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                let others = ids.len() - 1;
                return ids
                    .iter()
                    .map(|id| {
                        let op = format!("load task {id} (in one statement with {others} others)");
                        Err(Error::backend(BACKEND, op, why.clone()))
                    })
                    .collect();
            }
        };
        let mut seen = HashSet::new();
        ids.iter()
            .map(|id| {
                let first = seen.insert(id);
                match found.remove(id.as_str()) {
                    Some(Ok(task)) => Ok(Some(task)),
                    None if first => Ok(None),
                    // A row that does not decode, or an id given again (its
                    // row taken by the first): its own load answers.
                    _ => self.load(id),
                }
            })
            .collect()
    }

    /// An insert whose reply was lost after the commit (the connection
    /// dropped) finds the task stored exactly as it was to write it, and
    /// is done. Its failure, the server's refusal or one before sending, is
    /// known to have changed nothing (`known_unchanged`). One sent that
    /// finds no task is not made again: another may have deleted what it
    /// wrote (`pg_linearizable` caught a create made twice so).
    fn insert(&self, record: &Record, max_active: usize) -> Result<Insert> {
        match self.try_insert(record, max_active) {
            Err(e) if matches!(self.found(&e, record, "insert", None), Found::Written) => {
                Ok(Insert::Done)
            }
            inserted => known_unchanged(inserted),
        }
    }

    /// A write whose reply was lost after the commit (the connection
    /// dropped) finds the task stored exactly as it was to write it, and is
    /// done.
    fn replace(&self, current: &Task, next: &Record) -> Result<Swap> {
        self.replace_at(current, None, next)
    }

    fn remove(&self, current: &Task) -> Result<Swap> {
        self.remove_at(current, None)
    }

    /// Decides on the version this handle last wrote, if it kept it, and
    /// writes only if that is still the stored version, to its stored JSON
    /// (one round trip); otherwise, or to keep the task or refuse the
    /// change, as the default: on the version loaded (see `pg::recent`).
    fn modify(&self, id: &TaskId, decide: &mut Decide<'_>) -> Result<Modified> {
        let Some(guess) = self.recent.get(id) else {
            return modify_from(self, self.load(id)?, decide);
        };
        let (task, json) = (guess.task(), Some(guess.json()));
        let stored = match decide(task) {
            Ok(Change::Replace(next)) => match self.replace_at(task, json, &next)? {
                Swap::Done => return Ok(Modified::Replaced(next.into_task())),
                Swap::Changed(now) => now,
            },
            Ok(Change::Remove) => match self.remove_at(task, json)? {
                Swap::Done => return Ok(Modified::Removed(task.clone())),
                Swap::Changed(now) => now,
            },
            Ok(Change::Keep) | Err(_) => self.load(id)?,
        };
        modify_from(self, stored, decide)
    }

    fn scan(&self, scan: &Scan) -> Result<Scanned> {
        let op = || format!("scan schema {}", self.sql.schema);
        let status = scan.status.map(|s| s.as_str());
        // Past the column's range every stored expiry is at or before it;
        // the rows are checked exactly below.
        let expired_at = scan.expired_at.map(saturating_nanos);
        let owned = scan.owner.as_deref().map(sql::owned_text);
        // The position rows are taken after: the scan's, then the last row
        // taken, as stored (an unreadable row has no position of its own).
        let mut after: Option<(i64, String)> = scan
            .after
            .as_ref()
            .map(|p| (saturating_nanos(p.created_at), p.id.as_str().to_owned()));
        let (mut tasks, mut skipped) = (Vec::new(), Vec::new());
        // `LIMIT` counts rows, and a row may be left out (unreadable, or
        // outside the scan by its exact keys): a batch is short only where
        // the rows end, so the rows left out are made up by more.
        loop {
            let want = scan.limit - tasks.len();
            let limit = i64::try_from(want).unwrap_or(i64::MAX);
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&limit];
            if let Some(status) = &status {
                params.push(status);
            }
            if let Some(at) = &expired_at {
                params.push(at);
            }
            if let Some(owned) = &owned {
                params.push(owned);
            }
            if let Some((at, id)) = &after {
                params.push(at);
                params.push(id);
            }
            let (mut rows, mut last) = (0, None);
            // Each row shaped before the next is taken: a scan without
            // payloads holds one whole row at a time, not the batch.
            let sql = self.sql.scan(scan, after.is_some());
            self.run_each(&op, &sql, &params, Again::Read, |row| {
                rows += 1;
                let id: &str = self.column(&row, 0, "tasks", &op)?;
                let of_task = || format!("{} (task {id})", op());
                let at: i64 = self.column(&row, 2, "tasks", &of_task)?;
                let task = decode(id, self.column(&row, 1, "tasks", &of_task)?)
                    .and_then(|task| listed_in_place(task, at))
                    .and_then(|task| picked_as_its_columns(task, scan));
                match task {
                    Ok(task) if scan.matches(&task) && scan.owns(&task) => {
                        tasks.push(scan.shape(task));
                    }
                    Ok(_) => {}
                    Err(reason) => skipped.push(Skipped::new(
                        TaskId::parse(id).ok(),
                        self.row_of(id),
                        reason,
                        UnreadableAction::LeftInPlace,
                    )),
                }
                last = Some((at, id.to_owned()));
                Ok(())
            })?;
            if rows < want || tasks.len() == scan.limit {
                return Ok(Scanned::new(tasks, skipped));
            }
            after = last;
        }
    }

    /// In one statement where it can, and task by task where not (see
    /// `batch`); after a batch that may have committed unanswered,
    /// `replace_found` tells what it wrote. A task left out of a batch
    /// that committed, of one the server refused, or written alone, is a
    /// write of its own: a task found stored as it was to write it was
    /// written by another call (of this handle, at the same instant), not
    /// by this one (`replace` itself tells a lost reply of its own). Its
    /// failure, the server's refusal or one before sending, is known to
    /// have changed nothing (`known_unchanged`); after a batch that may
    /// have committed, no failure is.
    fn replace_all(&self, swaps: &[(Task, Record)]) -> Vec<Result<Swap>> {
        self.batch(
            "replace",
            swaps,
            |(current, _)| current,
            || self.try_replace_all(swaps),
            |(current, next), why| match why {
                Alone::Unanswered => self.replace_found(current, next),
                Alone::Unbatched | Alone::Refused | Alone::LeftOut => {
                    known_unchanged(self.replace(current, next))
                }
            },
        )
    }

    fn remove_all(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        self.remove_batch(tasks, false)
    }

    /// An expired task is gone whoever removed it: after a removal that may
    /// have committed though it failed (its reply lost), a task no longer
    /// stored counts as removed by this call (two sweeps may then both
    /// count it), not as removed by another.
    fn remove_expired(&self, tasks: &[Task]) -> Vec<Result<Swap>> {
        self.remove_batch(tasks, true)
    }

    /// Counts the active rows again into the counter, if it was out: a
    /// corrected counter counts as one leftover cleaned. A read that takes
    /// no lock tells first whether it is out: a counter that is right (the
    /// rule) costs a sweep no wait for a writer holding the counter's row
    /// and no commit of its own.
    fn clean_up(&self) -> Result<usize> {
        if self.counter_agrees()? {
            return Ok(0);
        }
        Ok(usize::from(self.recount()?.is_some()))
    }

    fn changes(&self) -> Option<ChangeFeed> {
        if !self.sql.notifies {
            // Its own writes would not show there.
            return None;
        }
        Some(ChangeFeed::new(Listener::new(
            self.pool.config().clone(),
            self.sql.channel.clone(),
        )))
    }

    fn refresh_clock(&self) {
        if let Some(clock) = &self.clock {
            clock.refresh_if_due();
        }
    }

    fn largest_task(&self) -> usize {
        PG_LARGEST_TASK
    }
}
